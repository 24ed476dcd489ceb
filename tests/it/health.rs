//! Health tells the truth about the database: NOT_SERVING until it answers, while it does not,
//! and SERVING again when it is back, without a restart.

use spec_provider::config::DatabaseUrl;
use spec_provider::proto::registryfacade::GetImageSpecRequest;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::app::{start, test_settings};
use crate::db::{Backend, TestDb};
use crate::fixtures::{full_spec, put};
use crate::gate::Gate;

#[tokio::test]
async fn health_follows_a_postgres_outage_and_recovery() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut url = url::Url::parse(db.settings.url.expose()).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let upstream = tokio::net::lookup_host(upstream)
        .await
        .unwrap()
        .next()
        .unwrap();
    let gate = Gate::new(upstream).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(gate.addr.port())).unwrap();

    let mut settings = test_settings(&db);
    settings.database.url = DatabaseUrl::new(url.as_str());
    settings.database.acquire_timeout = std::time::Duration::from_millis(500);
    let app = start(settings).await;
    let get = |id: &'static str| {
        let mut provider = app.provider.clone();
        async move {
            provider
                .get_image_spec(GetImageSpecRequest { id: id.into() })
                .await
        }
    };

    // The database never answered: not serving, and RPCs fail fast with UNAVAILABLE.
    assert_eq!(app.health_status("").await, ServingStatus::NotServing);
    assert_eq!(
        app.health_status("specprovider.v1.SpecAdmin").await,
        ServingStatus::NotServing
    );
    assert_eq!(get("ws-1").await.unwrap_err().code(), Code::Unavailable);

    gate.open();
    app.wait_for_health(ServingStatus::Serving).await;
    app.admin
        .clone()
        .put_spec(put("ws-1", full_spec(1)))
        .await
        .unwrap();

    gate.close();
    app.wait_for_health(ServingStatus::NotServing).await;
    assert_eq!(get("ws-1").await.unwrap_err().code(), Code::Unavailable);

    gate.open();
    app.wait_for_health(ServingStatus::Serving).await;
    let spec = get("ws-1").await.unwrap().into_inner().spec;
    assert_eq!(spec, Some(full_spec(1)));
}
