//! The HTTP listener of `server.metrics_listen`: `/metrics` for Prometheus, and `/healthz` and
//! `/readyz` for probes that speak HTTP rather than gRPC.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::Metrics;

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    is_serving: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is dropped or aborted.
/// `is_serving` tells whether the gRPC health service says SERVING, so that `/readyz` always
/// says the same.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    is_serving: impl Fn() -> bool + Send + Sync + 'static,
) -> std::io::Result<()> {
    let is_serving = Arc::new(is_serving);
    let router = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(HttpState {
            metrics,
            is_serving,
        });
    axum::serve(listener, router).await
}

async fn scrape(State(state): State<HttpState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "encoding the metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed\n",
            )
                .into_response()
        }
    }
}

/// 200 exactly while the gRPC health service says SERVING: not before the database answered,
/// not while it does not, not once shutdown began.
async fn ready(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if (state.is_serving)() {
        (StatusCode::OK, "SERVING\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n")
    }
}
