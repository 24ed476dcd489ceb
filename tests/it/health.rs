//! Health tells the truth about the database: NOT_SERVING until it answers, while it does not,
//! and SERVING again when it is back, without a restart.

use spec_provider::proto::registryfacade::GetImageSpecRequest;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::app::start;
use crate::db::{Backend, TestDb};
use crate::fixtures::{full_spec, put};
use crate::gate::behind_gate;

#[tokio::test]
async fn health_follows_a_postgres_outage_and_recovery() {
    let db = TestDb::new(Backend::Postgres).await;
    let (gate, settings) = behind_gate(&db).await;
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
