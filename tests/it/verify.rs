//! Verification through the API and the CLI: VerifySpec, PutSpec with `verify` and
//! `pin_references`, `verify.required`, the admin role, `spec-provider verify` and `put --verify
//! / --pin`; a real server on port 0 on both backends, a real docker-registry and a content
//! server on loopback.

use base64::Engine;
use spec_provider::config::Secret;
use spec_provider::proto::registryfacade::{GetImageSpecRequest, ImageSpec};
use spec_provider::proto::specprovider::v1::{
    GetSpecRequest, PutSpecRequest, SpecRecord, VerifySpecRequest, VerifySpecResponse,
    verify_spec_request,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::app::{DEADLINE, TestApp, spawn_app_with};
use crate::cli_client::run;
use crate::db::Backend;
use crate::fixtures::{put, with_token};
use crate::observability::scrape;
use crate::process::ServerProcess;
use crate::registry_fixture::{
    ContentServer, PASSWORD, RegistryAuth, TestRegistry, TokenIssuer, USER, docker_config_for_all,
    gzip_layer, remote, sha256,
};

on_both_backends!(
    a_put_that_fails_verification_is_refused_with_every_failed_check_and_changes_nothing,
    a_pinned_put_stores_the_digests_and_its_retry_is_idempotent_until_a_tag_moves,
    verify_required_makes_every_put_verify,
    verify_spec_checks_a_stored_spec_or_a_given_one,
    the_cli_verifies_by_id_or_file_and_puts_with_verify_and_pin,
);

/// A registry holding `base:v1` and `ide:v1`, a content server, and a server that speaks HTTP to
/// both (they are on loopback without TLS).
struct World {
    registry: TestRegistry,
    content: ContentServer,
    layer: Vec<u8>,
    diff_id: String,
    app: TestApp,
}

impl World {
    async fn new(
        backend: Backend,
        customize: impl FnOnce(&mut spec_provider::config::Settings),
    ) -> Self {
        let registry = TestRegistry::start(RegistryAuth::Open).await;
        registry.push_image("base", "v1").await;
        registry.push_image("ide", "v1").await;
        let (layer, diff_id) = gzip_layer(b"workspace content");
        let content = ContentServer::start(layer.clone()).await;
        let host = registry.host.clone();
        let app = spawn_app_with(backend, |s| {
            s.verify.insecure_registries = vec![host];
            s.validation.allow_http_urls = true;
            customize(s);
        })
        .await;
        Self {
            registry,
            content,
            layer,
            diff_id,
            app,
        }
    }

    /// `name` in the registry.
    fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.registry.host)
    }

    /// A spec whose every reference resolves and whose remote layer answers with its size.
    fn good_spec(&self) -> ImageSpec {
        ImageSpec {
            base_ref: self.image("base:v1"),
            ide_ref: self.image("ide:v1"),
            content_layer: vec![self.layer_at("/layer")],
            ..ImageSpec::default()
        }
    }

    /// A spec with an unknown tag and a layer URL that answers 404.
    fn bad_spec(&self) -> ImageSpec {
        ImageSpec {
            base_ref: self.image("base:v9"),
            ide_ref: self.image("ide:v1"),
            content_layer: vec![self.layer_at("/gone")],
            ..ImageSpec::default()
        }
    }

    fn layer_at(&self, path: &str) -> spec_provider::proto::registryfacade::ContentLayer {
        remote(
            self.content.url(path),
            &sha256(&self.layer),
            &self.diff_id,
            self.layer.len(),
        )
    }

    async fn put(&self, request: PutSpecRequest) -> Result<SpecRecord, Status> {
        self.app
            .admin
            .clone()
            .put_spec(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn verify(
        &self,
        target: verify_spec_request::Target,
    ) -> Result<VerifySpecResponse, Status> {
        self.app
            .admin
            .clone()
            .verify_spec(VerifySpecRequest {
                target: Some(target),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The record stored under `id`, or the code GetSpec answered.
    async fn record(&self, id: &str) -> Result<SpecRecord, Code> {
        self.app
            .admin
            .clone()
            .get_spec(GetSpecRequest { id: id.to_owned() })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| status.code())
    }

    /// The spec stored under `id`, or the code GetSpec answered.
    async fn stored(&self, id: &str) -> Result<ImageSpec, Code> {
        self.record(id)
            .await
            .map(|record| record.spec.unwrap_or_default())
    }

    /// What a registry facade is served for `id`, or the code GetImageSpec answered.
    async fn served(&self, id: &str) -> Result<ImageSpec, Code> {
        self.app
            .provider
            .clone()
            .get_image_spec(GetImageSpecRequest { id: id.to_owned() })
            .await
            .map(|answer| answer.into_inner().spec.unwrap_or_default())
            .map_err(|status| status.code())
    }
}

fn verifying(request: PutSpecRequest) -> PutSpecRequest {
    PutSpecRequest {
        verify: true,
        ..request
    }
}

fn pinning(request: PutSpecRequest) -> PutSpecRequest {
    PutSpecRequest {
        pin_references: true,
        ..request
    }
}

/// The PreconditionFailure violations of `status`, as (subject, description).
fn failed_preconditions(status: &Status) -> Vec<(String, String)> {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    status
        .get_details_precondition_failure()
        .expect("PreconditionFailure details")
        .violations
        .into_iter()
        .map(|v| {
            assert_eq!(v.r#type, "VERIFICATION");
            (v.subject, v.description)
        })
        .collect()
}

async fn a_put_that_fails_verification_is_refused_with_every_failed_check_and_changes_nothing(
    backend: Backend,
) {
    let world = World::new(backend, |_| {}).await;
    let verifications = async |result: &str| {
        scrape(world.app.metrics_addr)
            .await
            .value("spec_provider_verifications_total", &[("result", result)])
    };
    assert_eq!(
        verifications("failed").await,
        Some(0.0),
        "served from start-up"
    );
    let stored = world
        .put(verifying(put("ws-1", world.good_spec())))
        .await
        .unwrap();
    assert_eq!(stored.generation, 1);

    let replace = PutSpecRequest {
        expected_generation: Some(1),
        ..verifying(put("ws-1", world.bad_spec()))
    };
    let status = world.put(replace).await.unwrap_err();

    assert_eq!(
        failed_preconditions(&status),
        [
            (
                "spec.base_ref".to_owned(),
                format!(
                    "manifest unknown: tag \"v9\" not found in {}",
                    world.image("base")
                )
            ),
            (
                "spec.content_layer[0].remote".to_owned(),
                format!("{} answers 404 Not Found to HEAD", world.content.addr)
            ),
        ]
    );
    assert_eq!(world.stored("ws-1").await.unwrap(), world.good_spec());
    let record = world.record("ws-1").await.unwrap();
    assert_eq!(record.generation, 1, "a refused put changes nothing");
    let status = world
        .put(verifying(put("ws-2", world.bad_spec())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(world.stored("ws-2").await, Err(Code::NotFound));
    assert_eq!(world.served("ws-2").await, Err(Code::NotFound));
    assert_eq!(verifications("ok").await, Some(1.0));
    assert_eq!(verifications("failed").await, Some(2.0));
    // Without `verify`, the same spec is stored as before: verification is asked for.
    world.put(put("ws-2", world.bad_spec())).await.unwrap();
}

async fn a_pinned_put_stores_the_digests_and_its_retry_is_idempotent_until_a_tag_moves(
    backend: Backend,
) {
    // No digest cache: the moved tag below is seen at once.
    let world = World::new(backend, |s| s.verify.cache_ttl = std::time::Duration::ZERO).await;
    let report = world
        .verify(verify_spec_request::Target::Spec(world.good_spec()))
        .await
        .unwrap();
    let (base, ide) = (
        report.checks[0].digest.clone(),
        report.checks[1].digest.clone(),
    );

    let first = world
        .put(pinning(put("ws-1", world.good_spec())))
        .await
        .unwrap();

    let pinned = world.stored("ws-1").await.unwrap();
    assert_eq!(
        pinned.base_ref,
        format!("{}@{base}", world.image("base:v1"))
    );
    assert_eq!(pinned.ide_ref, format!("{}@{ide}", world.image("ide:v1")));
    assert_eq!(pinned.content_layer, world.good_spec().content_layer);
    assert_eq!(world.served("ws-1").await, Ok(pinned.clone()));
    let again = world
        .put(pinning(put("ws-1", world.good_spec())))
        .await
        .unwrap();
    assert_eq!(
        again.generation, first.generation,
        "same digests: the same spec"
    );
    assert_eq!(again.spec_digest, first.spec_digest);

    let moved = world.registry.push_image("base", "v1").await;
    assert_ne!(moved, base);
    let status = world
        .put(pinning(put("ws-1", world.good_spec())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(world.stored("ws-1").await.unwrap(), pinned);
}

async fn verify_required_makes_every_put_verify(backend: Backend) {
    let world = World::new(backend, |s| s.verify.required = true).await;

    let status = world.put(put("ws-1", world.bad_spec())).await.unwrap_err();

    assert_eq!(failed_preconditions(&status).len(), 2);
    assert_eq!(world.stored("ws-1").await, Err(Code::NotFound));
    world.put(put("ws-1", world.good_spec())).await.unwrap();
}

async fn verify_spec_checks_a_stored_spec_or_a_given_one(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    world.put(put("ws-1", world.good_spec())).await.unwrap();

    let by_id = world
        .verify(verify_spec_request::Target::Id("ws-1".into()))
        .await
        .unwrap();
    let given = world
        .verify(verify_spec_request::Target::Spec(world.bad_spec()))
        .await
        .unwrap();

    assert!(by_id.ok, "{by_id:#?}");
    let fields: Vec<&str> = by_id.checks.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.base_ref",
            "spec.ide_ref",
            "spec.content_layer[0].remote"
        ]
    );
    assert!(by_id.checks[0].digest.starts_with("sha256:"));
    assert!(!given.ok);
    assert_eq!(
        given.checks[0].error,
        format!(
            "manifest unknown: tag \"v9\" not found in {}",
            world.image("base")
        )
    );
    assert_eq!(given.checks[0].reference, world.image("base:v9"));
    assert!(given.checks[1].ok && given.checks[1].error.is_empty());
    assert_eq!(world.stored("ws-2").await, Err(Code::NotFound));

    let unknown = world
        .verify(verify_spec_request::Target::Id("ws-404".into()))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let invalid = world
        .verify(verify_spec_request::Target::Spec(ImageSpec::default()))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let missing = world
        .app
        .admin
        .clone()
        .verify_spec(VerifySpecRequest { target: None })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(missing.message().contains("target"), "{missing:?}");
}

#[tokio::test]
async fn verify_spec_is_for_the_admin_role_only() {
    let world = World::new(Backend::Sqlite, |s| {
        s.auth.admin_tokens = vec![Secret::new("admin-token-1")];
        s.auth.reader_tokens = vec![Secret::new("reader-token-1")];
    })
    .await;
    let call = |token: &'static str| {
        let mut admin = world.app.admin.clone();
        let spec = world.good_spec();
        async move {
            let request = with_token(
                VerifySpecRequest {
                    target: Some(verify_spec_request::Target::Spec(spec)),
                },
                token,
            );
            admin.verify_spec(request).await.map(|r| r.into_inner().ok)
        }
    };

    assert_eq!(
        call("reader-token-1").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(call("admin-token-1").await.unwrap());
}

async fn the_cli_verifies_by_id_or_file_and_puts_with_verify_and_pin(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, spec: &ImageSpec| {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_string(spec).unwrap()).unwrap();
        path.display().to_string()
    };
    let (good, bad) = (
        file("good.json", &world.good_spec()),
        file("bad.json", &world.bad_spec()),
    );

    let refused = run(&world.app, &["put", "ws-1", "--file", &bad, "--verify"])
        .await
        .expect_code(1);
    assert!(
        refused
            .stderr
            .contains("was rejected with FailedPrecondition"),
        "{refused:#?}"
    );
    assert!(
        refused.stderr.contains(&format!(
            "spec.base_ref: manifest unknown: tag \"v9\" not found in {}",
            world.image("base")
        )),
        "{refused:#?}"
    );
    assert!(
        refused.stderr.contains("spec.content_layer[0].remote: "),
        "{refused:#?}"
    );
    assert_eq!(world.stored("ws-1").await, Err(Code::NotFound));

    run(
        &world.app,
        &["put", "ws-1", "--file", &good, "--pin", "--output", "json"],
    )
    .await
    .expect_code(0);
    let pinned = world.stored("ws-1").await.unwrap();
    assert!(
        pinned
            .base_ref
            .starts_with(&format!("{}@sha256:", world.image("base:v1")))
    );

    let by_id = run(&world.app, &["verify", "ws-1", "--output", "json"])
        .await
        .expect_code(0);
    let report: serde_json::Value = by_id.json();
    assert_eq!(report["ok"], true);
    assert_eq!(report["checks"][0]["field"], "spec.base_ref");
    assert_eq!(report["checks"][0]["reference"], pinned.base_ref.as_str());
    assert_eq!(report["checks"][0]["error"], serde_json::Value::Null);
    assert_eq!(report["checks"][2]["digest"], serde_json::Value::Null);
    assert_eq!(
        report.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["checks", "ok"]
    );

    let from_file = run(&world.app, &["verify", "--file", &bad, "--output", "table"])
        .await
        .expect_code(1);
    assert!(from_file.stdout.contains("FAILED"), "{from_file:#?}");
    assert!(
        from_file.stdout.contains("manifest unknown"),
        "{from_file:#?}"
    );
    let json = run(&world.app, &["verify", "--file", &bad, "--output", "json"])
        .await
        .expect_code(1);
    assert_eq!(
        json.stdout.lines().count(),
        1,
        "exactly one object: {json:#?}"
    );
    assert_eq!(json.json::<serde_json::Value>()["ok"], false);
}

#[tokio::test]
async fn no_credential_reaches_a_log_line_an_answer_or_a_metric() {
    let issuer = TokenIssuer::start().await;
    let basic = TestRegistry::start(RegistryAuth::Htpasswd).await;
    let token = TestRegistry::start(RegistryAuth::Token(issuer.clone())).await;
    basic.push_image("private/base", "v1").await;
    token.push_image("private/ide", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let auth_file = docker_config_for_all(dir.path(), &[&basic.host, &token.host]);
    let url = format!("sqlite://{}", dir.path().join("specs.db").display());
    let insecure = format!("{},{}", basic.host, token.host);
    // Every level of every crate: reqwest and hyper included.
    let mut server = ServerProcess::start(
        &url,
        &[
            ("RUST_LOG", "trace"),
            ("SPEC_PROVIDER__VERIFY__INSECURE_REGISTRIES", &insecure),
            (
                "SPEC_PROVIDER__VERIFY__REGISTRY_AUTH_FILE",
                auth_file.to_str().unwrap(),
            ),
        ],
    )
    .await;
    server.wait_until_serving().await;
    let spec = ImageSpec {
        base_ref: format!("{}/private/base:v1", basic.host),
        ide_ref: format!("{}/private/ide:v1", token.host),
        supervisor_ref: format!("{}/private/ide:v404", token.host),
        ..ImageSpec::default()
    };

    let report = server
        .admin()
        .await
        .verify_spec(VerifySpecRequest {
            target: Some(verify_spec_request::Target::Spec(spec)),
        })
        .await
        .unwrap()
        .into_inner();

    assert!(report.checks[0].ok && report.checks[1].ok, "{report:#?}");
    assert!(!report.checks[2].ok, "{report:#?}");
    // Every line up to the failed check's, then whatever else is already written.
    let mut logs = Vec::new();
    let collect = async {
        while let Some(event) = server.log.recv().await {
            let failed = event["message"] == "verification check failed";
            logs.push(event.to_string());
            if failed {
                assert_eq!(event["field"], "spec.supervisor_ref");
                break;
            }
        }
    };
    tokio::time::timeout(DEADLINE, collect)
        .await
        .expect("the failed check is logged");
    while let Ok(event) = server.log.try_recv() {
        logs.push(event.to_string());
    }
    assert!(
        logs.iter().any(|line| line.contains("reqwest::connect")),
        "the registry client's own lines are there too"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", server.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("spec_provider_verifications_total"),
        "{metrics}"
    );
    let basic_header =
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let exposed = format!("{report:?}{}{metrics}", logs.join("\n"));
    let tokens = issuer.issued();
    assert_eq!(
        tokens.len(),
        2,
        "one token per resolution on the token registry"
    );
    for secret in [PASSWORD, basic_header.as_str()]
        .into_iter()
        .chain(tokens.iter().map(String::as_str))
    {
        assert!(!exposed.contains(secret), "{secret:?} leaked");
    }
}

#[tokio::test]
async fn a_cli_put_under_verify_required_gets_the_report_even_with_a_short_timeout() {
    // A registry that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_host = silent.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let insecure = silent_host.clone();
    let world = World::new(Backend::Sqlite, move |s| {
        s.verify.required = true;
        s.verify.timeout = std::time::Duration::from_secs(2);
        s.verify.insecure_registries.push(insecure);
    })
    .await;
    let spec = ImageSpec {
        base_ref: format!("{silent_host}/base:v1"),
        ..ImageSpec::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let spec_file = dir.path().join("spec.json");
    std::fs::write(&spec_file, serde_json::to_string(&spec).unwrap()).unwrap();
    let fixed_spec_file = dir.path().join("fixed-spec.json");
    std::fs::write(
        &fixed_spec_file,
        serde_json::json!({ "ws-2": serde_json::to_value(&spec).unwrap() }).to_string(),
    )
    .unwrap();
    let timed_out =
        format!("spec.base_ref: {silent_host} did not answer within 2s (verify.timeout)");

    // --timeout 1s is shorter than the server's verify.timeout: the call still waits for the
    // report instead of giving up with DeadlineExceeded.
    let put = run(
        &world.app,
        &[
            "put",
            "ws-1",
            "--file",
            spec_file.to_str().unwrap(),
            "--timeout",
            "1s",
        ],
    )
    .await
    .expect_code(1);
    let import = run(
        &world.app,
        &[
            "import",
            fixed_spec_file.to_str().unwrap(),
            "--timeout",
            "1s",
        ],
    )
    .await
    .expect_code(1);

    assert!(
        put.stderr.contains("was rejected with FailedPrecondition"),
        "{put:#?}"
    );
    assert!(put.stderr.contains(&timed_out), "{put:#?}");
    assert!(import.stderr.contains(&timed_out), "{import:#?}");
    assert_eq!(world.stored("ws-1").await, Err(Code::NotFound));
    assert_eq!(world.stored("ws-2").await, Err(Code::NotFound));
}
