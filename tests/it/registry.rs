//! Verification against real registries on loopback (Debian's docker-registry, with no auth,
//! basic auth and token auth), a content server for remote layers, a server that never answers,
//! and blocked networks. The tests call the [`Verifier`] directly.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use spec_provider::config::VerifySettings;
use spec_provider::domain::verification::{Report, pin_references};
use spec_provider::proto::registryfacade::ImageSpec;
use spec_provider::registry::Verifier;
use tokio::net::TcpListener;

use crate::app::eventually;
use crate::registry_fixture::{
    ContentServer, DOCKER_MANIFEST, GatedServer, PASSWORD, RegistryAuth, TestRegistry, TokenIssuer,
    USER, docker_config, docker_config_for_all, free_port, gzip_layer, oversized_manifest_registry,
    redirector, remote, sha256,
};

/// Settings that speak HTTP to `registries` (they listen on loopback without TLS).
fn settings(registries: &[&TestRegistry]) -> VerifySettings {
    VerifySettings {
        insecure_registries: registries.iter().map(|r| r.host.clone()).collect(),
        timeout: Duration::from_secs(10),
        ..VerifySettings::default()
    }
}

fn new_verifier(settings: &VerifySettings) -> (Verifier, prometheus::Registry) {
    let metrics = prometheus::Registry::new();
    (Verifier::new(settings, &metrics).unwrap(), metrics)
}

fn image(base_ref: &str) -> ImageSpec {
    ImageSpec {
        base_ref: base_ref.to_owned(),
        ..ImageSpec::default()
    }
}

/// The error of the check of `field`, failing the test if it passed.
fn error_of(report: &Report, field: &str) -> String {
    let check = report
        .checks
        .iter()
        .find(|check| check.field == field)
        .unwrap_or_else(|| panic!("no check of {field} in {report:?}"));
    assert!(!check.ok, "{field} should fail: {report:?}");
    assert!(!report.ok);
    check.error.clone().unwrap()
}

/// The value of a counter or the count of a histogram with these labels (0 when absent).
fn metric(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric().iter())
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| {
            if name.ends_with("_seconds") {
                m.get_histogram().get_sample_count()
            } else {
                m.get_counter().get_value() as u64
            }
        })
        .sum()
}

#[tokio::test]
async fn every_image_reference_resolves_to_the_pushed_digest_and_pins_to_it() {
    let registry = TestRegistry::start(RegistryAuth::Open).await;
    let base = registry.push_image("workspace/base", "v1").await;
    let docker = registry
        .push_image_manifest("ide/code", "amd64", DOCKER_MANIFEST)
        .await;
    let ide = registry
        .push_manifest("ide/code", "commit-1", DOCKER_MANIFEST, &docker)
        .await;
    let supervisor = registry
        .push_index("supervisor", "latest", &["arm64", "amd64"])
        .await;
    let plugin = registry.push_image("ide/plugin", "1.2").await;
    let host = &registry.host;
    let spec = ImageSpec {
        base_ref: format!("{host}/workspace/base:v1"),
        ide_ref: format!("{host}/ide/code:commit-1"),
        supervisor_ref: format!("{host}/supervisor"),
        ide_layer_ref: vec![
            format!("{host}/ide/plugin:1.2"),
            format!("{host}/ide/plugin@{plugin}"),
        ],
        content_layer: Vec::new(),
    };
    let (verifier, metrics) = new_verifier(&settings(&[&registry]));

    let report = verifier.verify(&spec).await;

    assert!(report.ok, "{report:#?}");
    let digests: Vec<(&str, &str)> = report
        .checks
        .iter()
        .map(|c| (c.field.as_str(), c.digest.as_deref().unwrap()))
        .collect();
    assert_eq!(
        digests,
        [
            ("spec.base_ref", base.as_str()),
            ("spec.ide_ref", ide.as_str()),
            ("spec.supervisor_ref", supervisor.as_str()),
            ("spec.ide_layer_ref[0]", plugin.as_str()),
            ("spec.ide_layer_ref[1]", plugin.as_str()),
        ]
    );
    let pinned = pin_references(spec.clone(), &report).unwrap();
    assert_eq!(pinned.base_ref, format!("{host}/workspace/base:v1@{base}"));
    assert_eq!(
        pinned.supervisor_ref,
        format!("{host}/supervisor:latest@{supervisor}")
    );
    assert_eq!(pinned.ide_layer_ref[1], spec.ide_layer_ref[1]);
    let again = verifier.verify(&pinned).await;
    assert!(again.ok, "a pinned spec verifies too: {again:#?}");
    assert_eq!(
        metric(
            &metrics,
            "spec_provider_verifications_total",
            &[("result", "ok")]
        ),
        2
    );
    assert!(
        metric(
            &metrics,
            "spec_provider_registry_request_duration_seconds",
            &[("registry", host)]
        ) > 0
    );
}

#[tokio::test]
async fn unknown_tags_repositories_and_platforms_fail_with_the_reason() {
    let registry = TestRegistry::start(RegistryAuth::Open).await;
    registry.push_image("base", "v1").await;
    registry
        .push_index("arm-only", "v1", &["arm64", "s390x"])
        .await;
    let host = &registry.host;
    let spec = ImageSpec {
        base_ref: format!("{host}/base:v9"),
        ide_ref: format!("{host}/nothing-here:v1"),
        supervisor_ref: format!("{host}/arm-only:v1"),
        ide_layer_ref: vec![format!("{host}/base:v1")],
        content_layer: Vec::new(),
    };
    let (verifier, metrics) = new_verifier(&settings(&[&registry]));

    let report = verifier.verify(&spec).await;

    assert_eq!(
        error_of(&report, "spec.base_ref"),
        format!("manifest unknown: tag \"v9\" not found in {host}/base")
    );
    assert_eq!(
        error_of(&report, "spec.ide_ref"),
        format!("manifest unknown: tag \"v1\" not found in {host}/nothing-here")
    );
    assert_eq!(
        error_of(&report, "spec.supervisor_ref"),
        "no linux/amd64 image in the index (verify.platform)"
    );
    assert!(report.checks[3].ok, "{report:#?}");
    assert_eq!(
        metric(
            &metrics,
            "spec_provider_verifications_total",
            &[("result", "failed")]
        ),
        1
    );
    assert!(
        metric(
            &metrics,
            "spec_provider_registry_requests_total",
            &[("registry", host), ("code", "404")]
        ) >= 2
    );

    let mut arm = settings(&[&registry]);
    arm.platform = "linux/arm64".into();
    let report = Verifier::new(&arm, &prometheus::Registry::new())
        .unwrap()
        .verify(&image(&format!("{host}/arm-only:v1")))
        .await;
    assert!(report.ok, "verify.platform picks the entry: {report:#?}");
}

#[tokio::test]
async fn basic_auth_credentials_come_from_the_docker_config_file() {
    let registry = TestRegistry::start(RegistryAuth::Htpasswd).await;
    let digest = registry.push_image("private/base", "v1").await;
    let spec = image(&format!("{}/private/base:v1", registry.host));
    let dir = tempfile::tempdir().unwrap();

    let anonymous = new_verifier(&settings(&[&registry])).0.verify(&spec).await;
    assert_eq!(
        error_of(&anonymous, "spec.base_ref"),
        format!(
            "401 from {}: it asks for credentials, and verify.registry_auth_file is not set",
            registry.host
        )
    );

    let mut with_file = settings(&[&registry]);
    with_file.registry_auth_file = Some(docker_config(dir.path(), &registry.host, USER, PASSWORD));
    let report = new_verifier(&with_file).0.verify(&spec).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.checks[0].digest.as_deref(), Some(digest.as_str()));

    let wrong = "not-the-password";
    with_file.registry_auth_file = Some(docker_config(dir.path(), &registry.host, USER, wrong));
    let report = new_verifier(&with_file).0.verify(&spec).await;
    let error = error_of(&report, "spec.base_ref");
    assert!(error.contains("refused the credentials"), "{error}");
    assert!(!format!("{report:?}").contains(wrong));
}

#[tokio::test]
async fn the_bearer_token_flow_gets_a_token_from_the_realm_with_the_file_s_credentials() {
    let issuer = TokenIssuer::start().await;
    let registry = TestRegistry::start(RegistryAuth::Token(issuer)).await;
    let digest = registry.push_image("private/ide", "v2").await;
    let spec = image(&format!("{}/private/ide:v2", registry.host));
    let dir = tempfile::tempdir().unwrap();

    let anonymous = new_verifier(&settings(&[&registry])).0.verify(&spec).await;
    let error = error_of(&anonymous, "spec.base_ref");
    assert!(
        error.starts_with(&format!("401 from {}", registry.host)),
        "{error}"
    );
    assert!(error.contains("verify.registry_auth_file"), "{error}");

    let mut with_file = settings(&[&registry]);
    with_file.registry_auth_file = Some(docker_config(dir.path(), &registry.host, USER, PASSWORD));
    let report = new_verifier(&with_file).0.verify(&spec).await;
    assert!(report.ok, "{report:#?}\n{}", registry.log());
    assert_eq!(report.checks[0].digest.as_deref(), Some(digest.as_str()));

    let wrong = "not-the-password-8Kd";
    with_file.registry_auth_file = Some(docker_config(dir.path(), &registry.host, USER, wrong));
    let report = new_verifier(&with_file).0.verify(&spec).await;
    let error = error_of(&report, "spec.base_ref");
    assert!(
        error.contains("token service refused the credentials"),
        "{error}"
    );
    assert!(!format!("{report:?}").contains(wrong));
}

#[tokio::test]
async fn a_token_service_in_a_blocked_network_is_refused_whether_named_or_redirected_to() {
    // 127.0.0.2 stands for the blocked network: the registry stays reachable on 127.0.0.1.
    let issuer = TokenIssuer::start_on(Ipv4Addr::new(127, 0, 0, 2)).await;
    let redirecting = redirector(issuer.realm()).await;
    let via_redirect = TestRegistry::start(RegistryAuth::TokenVia {
        issuer: issuer.clone(),
        realm: format!("http://{redirecting}/token"),
    })
    .await;
    let named = TestRegistry::start(RegistryAuth::Token(issuer.clone())).await;
    via_redirect.push_image("private/ide", "v1").await;
    named.push_image("private/ide", "v1").await;
    let spec = ImageSpec {
        base_ref: format!("{}/private/ide:v1", via_redirect.host),
        ide_ref: format!("{}/private/ide:v1", named.host),
        ..ImageSpec::default()
    };
    let mut open = settings(&[&via_redirect, &named]);
    let dir = tempfile::tempdir().unwrap();
    open.registry_auth_file = Some(docker_config_for_all(
        dir.path(),
        &[&via_redirect.host, &named.host],
    ));

    let reached = new_verifier(&open).0.verify(&spec).await;
    let requests = issuer.requests();
    assert!(reached.checks[1].ok, "{reached:#?}");
    assert_eq!(
        requests, 2,
        "the redirect is followed when nothing is blocked"
    );

    let mut blocked = open.clone();
    blocked.blocked_networks = vec!["127.0.0.2/32".parse().unwrap()];
    let (verifier, metrics) = new_verifier(&blocked);
    let report = verifier.verify(&spec).await;

    let refused = "refused to connect to 127.0.0.2: it lies in 127.0.0.2/32, one of \
                   verify.blocked_networks";
    assert_eq!(
        error_of(&report, "spec.base_ref"),
        format!("the token service of {}: {refused}", via_redirect.host)
    );
    assert_eq!(
        error_of(&report, "spec.ide_ref"),
        format!("the token service of {}: {refused}", named.host)
    );
    assert_eq!(
        issuer.requests(),
        requests,
        "the blocked issuer got nothing"
    );
    // The token requests are counted like the others.
    assert_eq!(
        metric(
            &metrics,
            "spec_provider_registry_requests_total",
            &[("registry", &redirecting.to_string()), ("code", "blocked")]
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            "spec_provider_registry_requests_total",
            &[("registry", &issuer.addr.to_string()), ("code", "blocked")]
        ),
        1
    );
}

#[tokio::test]
async fn a_manifest_over_4_mib_is_refused_with_its_size_or_without() {
    let host = oversized_manifest_registry().await.to_string();
    let spec = ImageSpec {
        base_ref: format!("{host}/big:sized"),
        ide_ref: format!("{host}/big:streamed"),
        ..ImageSpec::default()
    };
    let (verifier, _) = new_verifier(&VerifySettings {
        insecure_registries: vec![host.clone()],
        ..VerifySettings::default()
    });

    let report = verifier.verify(&spec).await;

    let refused =
        format!("{host} answered a manifest larger than 4194304 bytes (4 MiB), the most read");
    assert_eq!(error_of(&report, "spec.base_ref"), refused);
    assert_eq!(error_of(&report, "spec.ide_ref"), refused);
}

#[tokio::test]
async fn a_host_without_the_registry_api_says_so() {
    let server = ContentServer::start(b"not a registry".to_vec()).await;
    let host = server.addr.to_string();
    let (verifier, _) = new_verifier(&VerifySettings {
        insecure_registries: vec![host.clone()],
        ..VerifySettings::default()
    });

    let report = verifier.verify(&image(&format!("{host}/base:v1"))).await;

    assert_eq!(
        error_of(&report, "spec.base_ref"),
        format!("{host} does not speak the registry API: it answers 404 Not Found to GET /v2/")
    );
}

#[tokio::test]
async fn content_layers_answer_head_or_a_ranged_get_with_their_size() {
    let (layer, diff_id) = gzip_layer(b"workspace content");
    let server = ContentServer::start(layer.clone()).await;
    let digest = sha256(&layer);
    let size = layer.len();
    let spec = ImageSpec {
        base_ref: String::new(),
        content_layer: vec![
            remote(server.url("/layer"), &digest, &diff_id, size),
            remote(server.url("/layer"), &digest, &diff_id, size + 34),
            remote(server.url("/gone"), &digest, &diff_id, size),
            remote(server.url("/no-head"), &digest, &diff_id, size),
            remote(server.url("/no-head"), &digest, &diff_id, size - 1),
            remote(server.url("/signed-for-get"), &digest, &diff_id, size),
            remote(server.url("/signed-for-get"), &digest, &diff_id, size + 1),
        ],
        ..ImageSpec::default()
    };
    let (verifier, _) = new_verifier(&VerifySettings::default());

    let report = verifier.verify(&spec).await;

    let results: Vec<(&str, bool)> = report
        .checks
        .iter()
        .map(|c| (c.field.as_str(), c.ok))
        .collect();
    assert_eq!(
        results,
        [
            ("spec.content_layer[0].remote", true),
            ("spec.content_layer[1].remote", false),
            ("spec.content_layer[2].remote", false),
            ("spec.content_layer[3].remote", true),
            ("spec.content_layer[4].remote", false),
            ("spec.content_layer[5].remote", true),
            ("spec.content_layer[6].remote", false),
        ]
    );
    assert_eq!(
        error_of(&report, "spec.content_layer[1].remote"),
        format!("Content-Length {size} differs from size {}", size + 34)
    );
    assert_eq!(
        error_of(&report, "spec.content_layer[2].remote"),
        format!("{} answers 404 Not Found to HEAD", server.addr)
    );
    assert_eq!(
        error_of(&report, "spec.content_layer[4].remote"),
        format!("Content-Length {size} differs from size {}", size - 1)
    );
    assert_eq!(
        error_of(&report, "spec.content_layer[6].remote"),
        format!("Content-Length {size} differs from size {}", size + 1),
        "a HEAD answered 403 falls back to the ranged GET, which tells the length"
    );
    assert_eq!(report.checks[0].reference, server.url("/layer"));
}

#[tokio::test]
async fn layer_digests_are_compared_after_a_download_when_asked() {
    let (layer, diff_id) = gzip_layer(b"workspace content");
    let server = ContentServer::start(layer.clone()).await;
    let digest = sha256(&layer);
    let spec = ImageSpec {
        content_layer: vec![
            remote(server.url("/layer"), &digest, &diff_id, layer.len()),
            remote(server.url("/layer"), &digest, &digest, layer.len()),
            remote(server.url("/layer"), &diff_id, &diff_id, layer.len()),
        ],
        ..ImageSpec::default()
    };
    let (sizes_only, _) = new_verifier(&VerifySettings::default());
    assert!(
        sizes_only.verify(&spec).await.ok,
        "digests are not checked by default"
    );

    let (verifier, _) = new_verifier(&VerifySettings {
        layer_digests: true,
        ..VerifySettings::default()
    });
    let report = verifier.verify(&spec).await;

    assert!(report.checks[0].ok, "{report:#?}");
    assert_eq!(
        error_of(&report, "spec.content_layer[1].remote"),
        format!("diff_id {digest} differs from the sha256 of the uncompressed layer, {diff_id}")
    );
    assert_eq!(
        error_of(&report, "spec.content_layer[2].remote"),
        format!("digest {diff_id} differs from the sha256 of the downloaded layer, {digest}")
    );
}

#[tokio::test]
async fn blocked_networks_are_refused_before_connecting_after_resolution_and_after_redirects() {
    let registry = TestRegistry::start(RegistryAuth::Open).await;
    registry.push_image("base", "v1").await;
    let port = registry.host.rsplit_once(':').unwrap().1;
    let (layer, diff_id) = gzip_layer(b"x");
    let server = ContentServer::start(layer.clone()).await;
    let digest = sha256(&layer);
    let metadata = "http://169.254.169.254/latest/meta-data/layer.tar.gz".to_owned();
    let spec = ImageSpec {
        base_ref: format!("169.254.169.254:{port}/base:v1"),
        content_layer: vec![
            remote(metadata, &digest, &diff_id, layer.len()),
            remote(server.url("/to-metadata"), &digest, &diff_id, layer.len()),
            remote(server.url("/loop"), &digest, &diff_id, layer.len()),
        ],
        ..ImageSpec::default()
    };
    let (verifier, _) = new_verifier(&VerifySettings::default());

    let report = verifier.verify(&spec).await;

    assert_eq!(
        error_of(&report, "spec.base_ref"),
        format!(
            "refused to connect to 169.254.169.254: it lies in 169.254.0.0/16, one of \
             verify.blocked_networks"
        )
    );
    assert_eq!(
        error_of(&report, "spec.content_layer[0].remote"),
        "refused to connect to 169.254.169.254: it lies in 169.254.0.0/16, one of \
         verify.blocked_networks"
    );
    assert_eq!(
        error_of(&report, "spec.content_layer[1].remote"),
        "refused to connect to 169.254.169.254: it lies in 169.254.0.0/16, one of \
         verify.blocked_networks"
    );
    assert_eq!(
        error_of(&report, "spec.content_layer[2].remote"),
        format!(
            "{} answered with a redirect that was not followed: more than 5 redirects",
            server.addr
        )
    );
    // One HEAD of /to-metadata; the HEAD of /loop and the five redirects followed.
    assert_eq!(server.requests.load(Ordering::SeqCst), 1 + 6);

    let mut loopback_blocked = settings(&[]);
    loopback_blocked.blocked_networks = vec!["127.0.0.0/8".parse().unwrap()];
    loopback_blocked.insecure_registries = vec![format!("localhost:{port}")];
    let (verifier, _) = new_verifier(&loopback_blocked);
    let report = verifier
        .verify(&image(&format!("localhost:{port}/base:v1")))
        .await;
    assert_eq!(
        error_of(&report, "spec.base_ref"),
        "refused to connect to localhost: it resolves to 127.0.0.1, in 127.0.0.0/8, one of \
         verify.blocked_networks"
    );
}

#[tokio::test]
async fn a_registry_that_never_answers_fails_its_check_when_the_timeout_runs_out() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = silent.local_addr().unwrap().to_string();
    // Accepts connections and keeps them open without a word.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let settings = VerifySettings {
        insecure_registries: vec![host.clone()],
        timeout: Duration::from_millis(300),
        ..VerifySettings::default()
    };
    let (verifier, metrics) = new_verifier(&settings);
    let started = Instant::now();

    let report = verifier.verify(&image(&format!("{host}/base:v1"))).await;

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        error_of(&report, "spec.base_ref"),
        format!("{host} did not answer within 300ms (verify.timeout)")
    );
    assert_eq!(
        metric(
            &metrics,
            "spec_provider_registry_requests_total",
            &[("registry", host.as_str()), ("code", "timeout")]
        ),
        1
    );
}

#[tokio::test]
async fn resolved_digests_are_cached_so_a_burst_asks_the_registry_once_and_failures_are_not() {
    let registry = TestRegistry::start(RegistryAuth::Open).await;
    registry.push_image("ide", "v1").await;
    let host = registry.host.clone();
    let (verifier, metrics) = new_verifier(&settings(&[&registry]));
    let requests = || {
        metric(
            &metrics,
            "spec_provider_registry_requests_total",
            &[("registry", host.as_str())],
        )
    };
    let spec = image(&format!("{host}/ide:v1"));

    let burst = futures::future::join_all((0..8).map(|_| verifier.verify(&spec))).await;

    assert!(burst.iter().all(|report| report.ok), "{burst:#?}");
    // One resolution: the /v2/ ping and the manifest GET.
    assert_eq!(requests(), 2);
    assert!(verifier.verify(&spec).await.ok);
    assert_eq!(requests(), 2);

    let missing = image(&format!("{host}/ide:v2"));
    assert!(!verifier.verify(&missing).await.ok);
    let after_one_failure = requests();
    registry.push_image("ide", "v2").await;
    assert!(
        verifier.verify(&missing).await.ok,
        "a failure is not cached"
    );
    assert_eq!(requests(), after_one_failure + 2);
}

/// The values of the `registry` label of the request counter.
fn registry_labels(registry: &prometheus::Registry) -> BTreeSet<String> {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == "spec_provider_registry_requests_total")
        .flat_map(|family| family.get_metric().iter())
        .flat_map(|m| m.get_label().iter())
        .filter(|label| label.name() == "registry")
        .map(|label| label.value().to_owned())
        .collect()
}

#[tokio::test]
async fn the_registry_label_is_the_configured_registries_and_50_other_hosts_then_other() {
    let registry = TestRegistry::start(RegistryAuth::Open).await;
    registry.push_image("base", "v1").await;
    let (layer, diff_id) = gzip_layer(b"x");
    let digest = sha256(&layer);
    // 60 hosts, 127.0.0.2 to 127.0.0.61, on a port nothing listens on: each request is refused
    // at once, and counted.
    let port = free_port().await;
    let hosts: Vec<String> = (2..62).map(|i| format!("127.0.0.{i}:{port}")).collect();
    let spec = ImageSpec {
        content_layer: hosts
            .iter()
            .map(|host| {
                remote(
                    format!("http://{host}/layer"),
                    &digest,
                    &diff_id,
                    layer.len(),
                )
            })
            .collect(),
        ..ImageSpec::default()
    };
    let (verifier, metrics) = new_verifier(&settings(&[&registry]));

    assert!(!verifier.verify(&spec).await.ok);
    assert!(
        verifier
            .verify(&image(&format!("{}/base:v1", registry.host)))
            .await
            .ok
    );

    let labels = registry_labels(&metrics);
    assert!(labels.contains(&registry.host), "configured: {labels:?}");
    let seen: Vec<&String> = labels.iter().filter(|l| hosts.contains(l)).collect();
    assert_eq!(seen.len(), 50, "{labels:?}");
    assert_eq!(
        labels.len(),
        50 + 2,
        "50 hosts, `other` and the registry: {labels:?}"
    );
    assert_eq!(
        metric(
            &metrics,
            "spec_provider_registry_requests_total",
            &[("registry", "other")]
        ),
        10
    );
    assert_eq!(
        metric(
            &metrics,
            "spec_provider_registry_request_duration_seconds",
            &[("registry", "other")]
        ),
        10
    );
}

#[tokio::test]
async fn verify_concurrency_bounds_the_checks_of_all_verifications_together() {
    let (layer, diff_id) = gzip_layer(b"workspace content");
    let server = GatedServer::start(layer.clone()).await;
    let digest = sha256(&layer);
    let spec = ImageSpec {
        content_layer: vec![
            remote(server.url("/a"), &digest, &diff_id, layer.len()),
            remote(server.url("/b"), &digest, &diff_id, layer.len()),
        ],
        ..ImageSpec::default()
    };
    let (verifier, _) = new_verifier(&VerifySettings {
        concurrency: 2,
        timeout: Duration::from_secs(60),
        ..VerifySettings::default()
    });

    // Three verifications of two checks each: six requests, at most two at a time.
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let (verifier, spec) = (verifier.clone(), spec.clone());
            tokio::spawn(async move { verifier.verify(&spec).await })
        })
        .collect();
    for answered in 0..6 {
        let expected = 2.min(6 - answered);
        eventually(&format!("{expected} requests waiting"), async || {
            server.waiting() == expected
        })
        .await;
        server.let_through();
        eventually("one more answered", async || {
            server.answered() == answered + 1
        })
        .await;
    }

    for run in runs {
        let report = run.await.unwrap();
        assert!(report.ok, "{report:#?}");
    }
    assert_eq!(server.most_waiting(), 2);
}
