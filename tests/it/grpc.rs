//! End-to-end tests: real gRPC clients against a real server on port 0, on both backends.

use std::collections::BTreeSet;

use prost::Message;
use spec_provider::proto::registryfacade::{GetImageSpecRequest, ImageSpec};
use spec_provider::proto::specprovider::v1::{
    DeleteSpecRequest, GetSpecRequest, ListSpecsRequest, PutSpecRequest, SpecRecord, SpecView,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::app::{DEADLINE, TestApp, eventually, spawn_app, spawn_app_with};
use crate::db::Backend;
use crate::fixtures::{full_spec, labels, minimal_spec, put};

on_both_backends!(
    a_facade_gets_back_exactly_the_spec_registered_through_admin,
    an_unknown_method_of_spec_provider_is_unimplemented,
    get_image_spec_of_an_unknown_id_is_not_found,
    get_image_spec_rejects_empty_and_malformed_ids,
    put_spec_follows_the_generation_rules,
    put_spec_reports_every_violation_with_its_field_path,
    a_spec_over_the_size_limit_gets_a_clear_error_and_changes_nothing,
    an_expired_spec_disappears_from_every_rpc,
    list_specs_pages_through_filtered_records_in_id_order,
    list_specs_rejects_bad_page_sizes_and_foreign_tokens,
    delete_spec_reports_what_it_did,
    of_sixteen_concurrent_replacements_exactly_one_succeeds,
    health_is_serving_per_service_and_reflection_lists_both_services,
    shutdown_turns_health_not_serving_and_run_returns,
);

async fn get_image_spec(app: &TestApp, id: &str) -> Result<ImageSpec, tonic::Status> {
    app.provider
        .clone()
        .get_image_spec(GetImageSpecRequest { id: id.to_owned() })
        .await
        .map(|r| r.into_inner().spec.expect("an OK answer always has a spec"))
}

async fn put_spec(app: &TestApp, request: PutSpecRequest) -> Result<SpecRecord, tonic::Status> {
    app.admin
        .clone()
        .put_spec(request)
        .await
        .map(tonic::Response::into_inner)
}

fn violated_fields(status: &tonic::Status) -> BTreeSet<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("INVALID_ARGUMENT carries google.rpc.BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| {
            assert!(
                !v.description.is_empty(),
                "every violation says what is wrong"
            );
            v.field
        })
        .collect()
}

async fn a_facade_gets_back_exactly_the_spec_registered_through_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    let spec = full_spec(1);
    let record = put_spec(
        &app,
        put("a1b2c3d4-5678-90ab-cdef-1234567890ab", spec.clone()),
    )
    .await
    .unwrap();
    assert_eq!(record.generation, 1);
    assert_eq!(record.spec.as_ref(), Some(&spec));
    let served = get_image_spec(&app, "a1b2c3d4-5678-90ab-cdef-1234567890ab")
        .await
        .unwrap();
    assert_eq!(served, spec);
    assert_eq!(served.encode_to_vec(), spec.encode_to_vec());
    let expected_digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(spec.encode_to_vec()))
    );
    assert_eq!(record.spec_digest, expected_digest);
}

/// A codec that hands back an answer's bytes as they came, to check what is on the wire (the
/// server writes cached answers as stored bytes, not through prost).
struct RawAnswer<T>(std::marker::PhantomData<T>);

impl<T: Message + Send + 'static> tonic::codec::Codec for RawAnswer<T> {
    type Encode = T;
    type Decode = Vec<u8>;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = RawAnswer<T>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Self(std::marker::PhantomData)
    }
}

impl<T> tonic::codec::Decoder for RawAnswer<T> {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `path` on `app` with `request`; the answer's bytes.
pub async fn raw_call<T: Message + Send + 'static>(
    app: &TestApp,
    path: &'static str,
    request: T,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(request),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawAnswer::<T>(std::marker::PhantomData),
    )
    .await
    .map(tonic::Response::into_inner)
}

async fn an_unknown_method_of_spec_provider_is_unimplemented(backend: Backend) {
    let app = spawn_app(backend).await;
    let status = raw_call(
        &app,
        "/registryfacade.SpecProvider/GetSomethingElse",
        GetImageSpecRequest { id: "x".into() },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

async fn get_image_spec_of_an_unknown_id_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let status = get_image_spec(&app, "never-stored").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("never-stored"), "{status:?}");
}

async fn get_image_spec_rejects_empty_and_malformed_ids(backend: Backend) {
    let app = spawn_app(backend).await;
    for id in ["", "Upper", "a/b", "-lead", "trail-", &"x".repeat(201)] {
        let status = get_image_spec(&app, id).await.unwrap_err();
        assert_eq!(
            violated_fields(&status),
            BTreeSet::from(["id".to_owned()]),
            "{id:?}"
        );
    }
}

async fn put_spec_follows_the_generation_rules(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = put_spec(&app, put("ws-1", full_spec(1))).await.unwrap();
    assert_eq!(created.generation, 1);
    assert_eq!(created.create_time, created.update_time);

    // A retried put never fails and changes nothing.
    let repeated = put_spec(&app, put("ws-1", full_spec(1))).await.unwrap();
    assert_eq!(repeated, created);

    // A different spec needs expected_generation.
    let status = put_spec(&app, put("ws-1", full_spec(2))).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().contains("expected_generation"),
        "{status:?}"
    );
    let status = put_spec(
        &app,
        PutSpecRequest {
            expected_generation: Some(0),
            ..put("ws-1", full_spec(2))
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let status = put_spec(
        &app,
        PutSpecRequest {
            expected_generation: Some(7),
            ..put("ws-1", full_spec(2))
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(get_image_spec(&app, "ws-1").await.unwrap(), full_spec(1));

    let replaced = put_spec(
        &app,
        PutSpecRequest {
            expected_generation: Some(1),
            ..put("ws-1", full_spec(2))
        },
    )
    .await
    .unwrap();
    assert_eq!(replaced.generation, 2);
    assert_eq!(replaced.create_time, created.create_time);
    assert_ne!(replaced.spec_digest, created.spec_digest);
    assert_eq!(get_image_spec(&app, "ws-1").await.unwrap(), full_spec(2));

    // Same spec, new labels: updated, one generation more.
    let relabeled = put_spec(
        &app,
        PutSpecRequest {
            labels: labels(&[("team", "blue")]),
            ..put("ws-1", full_spec(2))
        },
    )
    .await
    .unwrap();
    assert_eq!(relabeled.generation, 3);
    assert_eq!(relabeled.labels, labels(&[("team", "blue")]));

    // expected_generation on an absent id.
    let status = put_spec(
        &app,
        PutSpecRequest {
            expected_generation: Some(3),
            ..put("ws-absent", full_spec(1))
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let fetched = app
        .admin
        .clone()
        .get_spec(GetSpecRequest { id: "ws-1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, relabeled);
}

async fn put_spec_reports_every_violation_with_its_field_path(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut spec = full_spec(1);
    spec.base_ref = String::new();
    if let Some(spec_provider::proto::registryfacade::content_layer::Spec::Remote(remote)) =
        spec.content_layer[0].spec.as_mut()
    {
        remote.digest = "sha256:not-hex".into();
        remote.url = "ftp://example.com/layer".into();
    }
    spec.content_layer.push(Default::default());
    let request = PutSpecRequest {
        id: "Bad Id".into(),
        spec: Some(spec),
        labels: labels(&[("not a key", "v")]),
        ttl: Some(pbjson_types::Duration {
            seconds: 0,
            nanos: 5,
        }),
        ..PutSpecRequest::default()
    };
    let status = put_spec(&app, request).await.unwrap_err();
    let fields = violated_fields(&status);
    for expected in [
        "id",
        "spec.base_ref",
        "spec.content_layer[0].remote.digest",
        "spec.content_layer[0].remote.url",
        "spec.content_layer[2]",
        "ttl",
    ] {
        assert!(
            fields.contains(expected),
            "{expected} missing from {fields:?}"
        );
    }
    assert!(
        fields.iter().any(|f| f.starts_with("labels")),
        "labels missing from {fields:?}"
    );
    // Nothing was stored.
    let listed = app
        .admin
        .clone()
        .list_specs(ListSpecsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.specs.is_empty());
}

async fn a_spec_over_the_size_limit_gets_a_clear_error_and_changes_nothing(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.limits.max_spec_bytes = 4096).await;
    let mut spec = minimal_spec(1);
    spec.content_layer
        .push(crate::fixtures::direct_layer(&vec![b'x'; 8192]));
    let status = put_spec(&app, put("big", spec)).await.unwrap_err();
    assert_eq!(
        violated_fields(&status),
        BTreeSet::from(["spec".to_owned()])
    );
    assert!(status.message().contains("4096"), "{status:?}");

    // Far beyond the limit, the transport's own limit answers with a status, not a reset.
    let mut huge = minimal_spec(1);
    huge.content_layer
        .push(crate::fixtures::direct_layer(&vec![b'x'; 2 * 1024 * 1024]));
    let status = put_spec(&app, put("huge", huge)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    for id in ["big", "huge"] {
        let status = get_image_spec(&app, id).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    // The server still answers.
    put_spec(&app, put("small", minimal_spec(1))).await.unwrap();
}

async fn an_expired_spec_disappears_from_every_rpc(backend: Backend) {
    let app = spawn_app(backend).await;
    let record = put_spec(
        &app,
        PutSpecRequest {
            ttl: Some(pbjson_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..put("short-lived", full_spec(1))
        },
    )
    .await
    .unwrap();
    let expire = record.expire_time.expect("a ttl sets expire_time");
    let update = record.update_time.unwrap();
    assert_eq!(expire.seconds - update.seconds, 1);
    assert_eq!(expire.nanos, update.nanos);
    put_spec(&app, put("long-lived", full_spec(1)))
        .await
        .unwrap();

    // Wait for the expiry itself, with a deadline.
    eventually("the spec to expire", async || {
        get_image_spec(&app, "short-lived").await.is_err()
    })
    .await;
    let status = get_image_spec(&app, "short-lived").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = app
        .admin
        .clone()
        .get_spec(GetSpecRequest {
            id: "short-lived".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let listed = app
        .admin
        .clone()
        .list_specs(ListSpecsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed.specs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["long-lived"]);
    let deleted = app
        .admin
        .clone()
        .delete_spec(DeleteSpecRequest {
            id: "short-lived".into(),
            allow_missing: true,
            expected_generation: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!deleted.deleted);

    // The id can be used again, as a new record.
    let recreated = put_spec(&app, put("short-lived", full_spec(2)))
        .await
        .unwrap();
    assert_eq!(recreated.generation, 1);
    assert!(recreated.expire_time.is_none());

    // Out-of-range ttls are refused.
    for seconds in [0, 366 * 24 * 3600] {
        let status = put_spec(
            &app,
            PutSpecRequest {
                ttl: Some(pbjson_types::Duration { seconds, nanos: 0 }),
                ..put("ttl-bounds", full_spec(1))
            },
        )
        .await
        .unwrap_err();
        assert_eq!(violated_fields(&status), BTreeSet::from(["ttl".to_owned()]));
    }
}

async fn list_specs_pages_through_filtered_records_in_id_order(backend: Backend) {
    let app = spawn_app(backend).await;
    // 25 ids under "ws-", every third one labeled team=blue; others that the prefix excludes.
    let mut expected_blue = Vec::new();
    for i in 0..25 {
        let id = format!("ws-{i:03}");
        let team = if i % 3 == 0 { "blue" } else { "red" };
        if team == "blue" {
            expected_blue.push(id.clone());
        }
        put_spec(
            &app,
            PutSpecRequest {
                labels: labels(&[("team", team), ("tier", "prod")]),
                ..put(&id, minimal_spec(i))
            },
        )
        .await
        .unwrap();
    }
    for id in ["wr-1", "wt-1", "ws"] {
        put_spec(
            &app,
            PutSpecRequest {
                labels: labels(&[("team", "blue")]),
                ..put(id, minimal_spec(0))
            },
        )
        .await
        .unwrap();
    }

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .admin
            .clone()
            .list_specs(ListSpecsRequest {
                page_size: 3,
                page_token: token.clone(),
                id_prefix: "ws-".into(),
                labels: labels(&[("team", "blue")]),
                view: SpecView::Basic as i32,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.specs.len() <= 3);
        for record in &page.specs {
            assert!(record.spec.is_none(), "the basic view omits the spec");
            assert_eq!(record.labels.get("team").map(String::as_str), Some("blue"));
        }
        seen.extend(page.specs.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, expected_blue);
    assert_eq!(pages, 3);

    // Without filters, the full view carries specs, in id (byte) order.
    let all = app
        .admin
        .clone()
        .list_specs(ListSpecsRequest {
            view: SpecView::Full as i32,
            ..ListSpecsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = all.specs.iter().map(|r| r.id.clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 28);
    assert!(all.next_page_token.is_empty());
    assert!(all.specs.iter().all(|r| r.spec.is_some()));
}

async fn list_specs_rejects_bad_page_sizes_and_foreign_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 0..3 {
        put_spec(&app, put(&format!("ws-{i}"), minimal_spec(i)))
            .await
            .unwrap();
    }
    let status = app
        .admin
        .clone()
        .list_specs(ListSpecsRequest {
            page_size: -1,
            ..ListSpecsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        BTreeSet::from(["page_size".to_owned()])
    );

    let first = app
        .admin
        .clone()
        .list_specs(ListSpecsRequest {
            page_size: 1,
            id_prefix: "ws".into(),
            ..ListSpecsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let status = app
        .admin
        .clone()
        .list_specs(ListSpecsRequest {
            page_size: 1,
            id_prefix: "ws-".into(),
            page_token: first.next_page_token,
            ..ListSpecsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        BTreeSet::from(["page_token".to_owned()])
    );
    let status = app
        .admin
        .clone()
        .list_specs(ListSpecsRequest {
            page_token: "not-a-token".into(),
            ..ListSpecsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        BTreeSet::from(["page_token".to_owned()])
    );

    // A page size above the maximum is clamped, not refused.
    let clamped = app
        .admin
        .clone()
        .list_specs(ListSpecsRequest {
            page_size: 5000,
            ..ListSpecsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(clamped.specs.len(), 3);
}

async fn delete_spec_reports_what_it_did(backend: Backend) {
    let app = spawn_app(backend).await;
    put_spec(&app, put("ws-del", full_spec(1))).await.unwrap();
    let delete = |id: &str, expected_generation, allow_missing| {
        let mut admin = app.admin.clone();
        let request = DeleteSpecRequest {
            id: id.to_owned(),
            expected_generation,
            allow_missing,
        };
        async move {
            admin
                .delete_spec(request)
                .await
                .map(|r| r.into_inner().deleted)
        }
    };
    let status = delete("ws-del", Some(2), false).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert!(
        get_image_spec(&app, "ws-del").await.is_ok(),
        "an aborted delete keeps the spec"
    );
    assert!(delete("ws-del", Some(1), false).await.unwrap());
    assert_eq!(
        get_image_spec(&app, "ws-del").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        delete("ws-del", None, false).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(!delete("ws-del", None, true).await.unwrap());
    let status = delete("", None, true).await.unwrap_err();
    assert_eq!(violated_fields(&status), BTreeSet::from(["id".to_owned()]));
}

async fn of_sixteen_concurrent_replacements_exactly_one_succeeds(backend: Backend) {
    let app = spawn_app(backend).await;
    put_spec(&app, put("ws-race", full_spec(0))).await.unwrap();
    let attempts = (1..=16).map(|variant| {
        let mut admin = app.admin.clone();
        tokio::spawn(async move {
            admin
                .put_spec(PutSpecRequest {
                    expected_generation: Some(1),
                    ..put("ws-race", full_spec(variant))
                })
                .await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let mut winners = Vec::new();
    for result in results {
        match result.unwrap() {
            Ok(record) => winners.push(record.into_inner()),
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one replacement wins");
    assert_eq!(winners[0].generation, 2);
    assert_eq!(
        Some(get_image_spec(&app, "ws-race").await.unwrap()),
        winners[0].spec
    );
}

async fn health_is_serving_per_service_and_reflection_lists_both_services(backend: Backend) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let app = spawn_app(backend).await;
    for service in [
        "",
        "registryfacade.SpecProvider",
        "specprovider.v1.SpecAdmin",
    ] {
        assert_eq!(
            app.health_status(service).await,
            ServingStatus::Serving,
            "{service:?}"
        );
    }

    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: BTreeSet<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "registryfacade.SpecProvider",
        "specprovider.v1.SpecAdmin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }

    // `describe` needs the files of a symbol, imports included.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "specprovider.v1.SpecAdmin".into(),
        )),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

async fn shutdown_turns_health_not_serving_and_run_returns(backend: Backend) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;

    let mut app = spawn_app(backend).await;
    let mut watch = app
        .health
        .clone()
        .watch(HealthCheckRequest {
            service: "registryfacade.SpecProvider".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let stopped = tokio::spawn(async move { app.stop().await });
    let next = tokio::time::timeout(DEADLINE, watch.message())
        .await
        .expect("a health update within the deadline")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    stopped
        .await
        .unwrap()
        .expect("run returns Ok after a shutdown");
}
