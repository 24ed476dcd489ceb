//! The settings' loading, layering and validation, and the example file.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

#[test]
fn defaults_serve_loopback_on_embedded_sqlite() {
    let settings = Settings::load(None, env(&[])).unwrap();
    assert_eq!(settings.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(settings.database.url.expose(), "sqlite://spec-provider.db");
    assert_eq!(settings.limits.max_spec_bytes, 8 * 1024 * 1024);
    assert_eq!(settings.server.shutdown_grace, Duration::from_secs(10));
    assert_eq!(settings.server.metrics_listen.to_string(), "127.0.0.1:9500");
}

#[test]
fn environment_overrides_nested_keys() {
    let settings = Settings::load(
        None,
        env(&[
            ("SPEC_PROVIDER__SERVER__LISTEN", "0.0.0.0:9090"),
            ("SPEC_PROVIDER__AUTH__ALLOW_INSECURE_ADMIN", "true"),
            ("SPEC_PROVIDER__DATABASE__URL", "postgres://u:p@db/specs"),
            ("SPEC_PROVIDER__DATABASE__ACQUIRE_TIMEOUT", "250ms"),
            ("SPEC_PROVIDER__VALIDATION__ALLOW_HTTP_URLS", "true"),
            ("SPEC_PROVIDER__LOG__FORMAT", "json"),
            ("SPEC_PROVIDER__SERVER__METRICS_LISTEN", "0.0.0.0:9600"),
            ("SPEC_PROVIDER__METRICS__REFRESH_INTERVAL", "1m"),
        ]),
    )
    .unwrap();
    assert_eq!(settings.server.metrics_listen.to_string(), "0.0.0.0:9600");
    assert_eq!(settings.metrics.refresh_interval, Duration::from_secs(60));
    assert_eq!(settings.server.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(
        settings.database.acquire_timeout,
        Duration::from_millis(250)
    );
    assert!(settings.validation.allow_http_urls);
    assert_eq!(settings.log.format, LogFormat::Json);
}

#[test]
fn a_file_is_read_and_the_environment_wins_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:1234\"\n[limits]\nmax_spec_bytes = 1024\n",
    )
    .unwrap();
    let settings = Settings::load(
        Some(&path),
        env(&[("SPEC_PROVIDER__LIMITS__MAX_SPEC_BYTES", "2048")]),
    )
    .unwrap();
    assert_eq!(settings.server.listen.port(), 1234);
    assert_eq!(settings.limits.max_spec_bytes, 2048);
}

#[test]
fn errors_name_the_offending_key() {
    let cases = [
        (
            "SPEC_PROVIDER__SERVER__LISTEN",
            "not-an-address",
            "server.listen",
        ),
        ("SPEC_PROVIDER__DATABASE__URL", "mysql://x", "database.url"),
        (
            "SPEC_PROVIDER__LIMITS__MAX_SPEC_BYTES",
            "99999999",
            "limits.max_spec_bytes",
        ),
        (
            "SPEC_PROVIDER__SERVER__SHUTDOWN_GRACE",
            "soon",
            "server.shutdown_grace",
        ),
        ("SPEC_PROVIDER__SERVER__LISTNE", "x", "listne"),
        (
            "SPEC_PROVIDER__TRACING__OTLP_ENDPOINT",
            "collector:4317",
            "tracing.otlp_endpoint",
        ),
        (
            "SPEC_PROVIDER__TRACING__SAMPLE_RATIO",
            "1.5",
            "tracing.sample_ratio",
        ),
        (
            "SPEC_PROVIDER__SERVER__METRICS_LISTEN",
            "127.0.0.1:8080",
            "server.metrics_listen",
        ),
        (
            "SPEC_PROVIDER__METRICS__REFRESH_INTERVAL",
            "0s",
            "metrics.refresh_interval",
        ),
        ("SPEC_PROVIDER__CACHE__MAX_BYTES", "0", "cache.max_bytes"),
        (
            "SPEC_PROVIDER__CACHE__NEGATIVE_TTL",
            "2m",
            "cache.negative_ttl",
        ),
        (
            "SPEC_PROVIDER__DATABASE__STATEMENT_TIMEOUT",
            "0s",
            "database.statement_timeout",
        ),
        (
            "SPEC_PROVIDER__SERVER__MAX_CONCURRENT_STREAMS",
            "0",
            "server.max_concurrent_streams",
        ),
        (
            "SPEC_PROVIDER__SERVER__REQUEST_TIMEOUT",
            "0s",
            "server.request_timeout",
        ),
        (
            "SPEC_PROVIDER__SERVER__MAX_CONNECTIONS",
            "0",
            "server.max_connections",
        ),
        (
            "SPEC_PROVIDER__SERVER__HTTP2_KEEPALIVE_INTERVAL",
            "0s",
            "server.http2_keepalive_interval",
        ),
        (
            "SPEC_PROVIDER__SERVER__HTTP2_KEEPALIVE_TIMEOUT",
            "0s",
            "server.http2_keepalive_timeout",
        ),
        (
            "SPEC_PROVIDER__TLS__MAX_HANDSHAKES",
            "0",
            "tls.max_handshakes",
        ),
        (
            "SPEC_PROVIDER__SERVER__PREFACE_TIMEOUT",
            "0s",
            "server.preface_timeout",
        ),
        (
            "SPEC_PROVIDER__VERIFY__PLATFORM",
            "amd64",
            "verify.platform",
        ),
        (
            "SPEC_PROVIDER__VERIFY__BLOCKED_NETWORKS",
            "not-a-network",
            "verify.blocked_networks",
        ),
        (
            "SPEC_PROVIDER__VERIFY__INSECURE_REGISTRIES",
            "http://r:5000/",
            "verify.insecure_registries",
        ),
        ("SPEC_PROVIDER__VERIFY__TIMEOUT", "0s", "verify.timeout"),
        (
            "SPEC_PROVIDER__VERIFY__CONCURRENCY",
            "0",
            "verify.concurrency",
        ),
    ];
    for (key, value, named) in cases {
        let err = Settings::load(None, env(&[(key, value)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(named),
            "{key}={value}: {err:?} should name {named}"
        );
    }
}

#[test]
fn the_example_file_loads_and_matches_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec-provider.example.toml");
    let example = Settings::load(Some(&path), env(&[])).unwrap();
    let defaults = Settings::load(None, env(&[])).unwrap();
    assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
}

#[test]
fn token_and_subject_lists_come_from_comma_separated_variables() {
    let settings = Settings::load(
        None,
        env(&[
            ("SPEC_PROVIDER__AUTH__ADMIN_TOKENS", "tok-a,tok-b"),
            ("SPEC_PROVIDER__AUTH__READER_TOKENS", "tok-r"),
            ("SPEC_PROVIDER__TLS__CERT", "/certs/tls.crt"),
            ("SPEC_PROVIDER__TLS__KEY", "/certs/tls.key"),
            ("SPEC_PROVIDER__TLS__CLIENT_CA", "/certs/ca.crt"),
            (
                "SPEC_PROVIDER__AUTH__ADMIN_SUBJECTS",
                "ws-manager,ws-manager-2",
            ),
            ("SPEC_PROVIDER__SERVER__LISTEN", "0.0.0.0:8080"),
        ]),
    )
    .unwrap();
    let tokens: Vec<&str> = settings
        .auth
        .admin_tokens
        .iter()
        .map(Secret::expose)
        .collect();
    assert_eq!(tokens, ["tok-a", "tok-b"]);
    assert_eq!(settings.auth.reader_tokens, [Secret::new("tok-r")]);
    assert_eq!(settings.auth.admin_subjects, ["ws-manager", "ws-manager-2"]);
    // Only the list keys are split.
    assert_eq!(settings.server.listen.to_string(), "0.0.0.0:8080");
    let shown = format!("{settings:?}");
    assert!(
        !shown.contains("tok-a") && !shown.contains("tok-r"),
        "{shown}"
    );
}

#[test]
fn spec_admin_on_a_public_address_needs_credentials_or_an_explicit_opt_in() {
    let public = ("SPEC_PROVIDER__SERVER__LISTEN", "0.0.0.0:8080");
    let err = Settings::load(None, env(&[public]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.listen"), "{err}");
    assert!(err.contains("auth.allow_insecure_admin = true"), "{err}");
    for extra in [
        ("SPEC_PROVIDER__AUTH__ALLOW_INSECURE_ADMIN", "true"),
        (
            "SPEC_PROVIDER__AUTH__ADMIN_TOKENS_FILE",
            "/secrets/admin-tokens",
        ),
        ("SPEC_PROVIDER__SERVER__ADMIN_LISTEN", "127.0.0.1:8081"),
    ] {
        Settings::load(None, env(&[public, extra])).unwrap();
    }
    let err = Settings::load(
        None,
        env(&[
            public,
            ("SPEC_PROVIDER__SERVER__ADMIN_LISTEN", "10.0.0.1:8081"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("server.admin_listen"), "{err}");
}

#[test]
fn tls_and_auth_settings_are_checked() {
    let cases = [
        (vec![("SPEC_PROVIDER__TLS__CERT", "/c")], "tls.key"),
        (
            vec![("SPEC_PROVIDER__TLS__CLIENT_CA", "/ca")],
            "tls.client_ca",
        ),
        (
            vec![("SPEC_PROVIDER__AUTH__READER_SUBJECTS", "facade")],
            "auth.admin_subjects",
        ),
        (
            vec![("SPEC_PROVIDER__AUTH__ADMIN_TOKENS", "has space")],
            "auth.admin_tokens",
        ),
    ];
    for (vars, named) in cases {
        let err = Settings::load(None, env(&vars)).unwrap_err().to_string();
        assert!(err.contains(named), "{vars:?}: {err}");
    }
}

#[test]
fn database_url_hides_its_password() {
    let url = DatabaseUrl::new("postgres://spec:hunter2@db:5432/specs");
    assert!(!format!("{url:?}").contains("hunter2"));
    assert!(!url.to_string().contains("hunter2"));
    assert_eq!(url.expose(), "postgres://spec:hunter2@db:5432/specs");
}

#[test]
fn verify_lists_come_from_comma_separated_variables() {
    let settings = Settings::load(
        None,
        env(&[
            (
                "SPEC_PROVIDER__VERIFY__INSECURE_REGISTRIES",
                "127.0.0.1:5000,registry.local:5001",
            ),
            (
                "SPEC_PROVIDER__VERIFY__BLOCKED_NETWORKS",
                "169.254.0.0/16,10.0.0.0/8",
            ),
        ]),
    )
    .unwrap();
    assert_eq!(
        settings.verify.insecure_registries,
        ["127.0.0.1:5000", "registry.local:5001"]
    );
    assert_eq!(settings.verify.blocked_networks.len(), 2);
}

#[test]
fn a_platform_is_os_and_architecture_and_maybe_a_variant_none_of_them_empty() {
    let parts = |platform: &str| {
        VerifySettings {
            platform: platform.into(),
            ..VerifySettings::default()
        }
        .platform_parts()
        .map(|(os, arch, variant)| format!("{os} {arch} {variant:?}"))
    };
    assert_eq!(parts("linux/amd64").as_deref(), Some("linux amd64 None"));
    assert_eq!(
        parts("linux/arm64/v8").as_deref(),
        Some("linux arm64 Some(\"v8\")")
    );
    for bad in [
        "",
        "amd64",
        "linux/",
        "/amd64",
        "linux/arm64/",
        "linux//v8",
        "a/b/c/d",
    ] {
        assert_eq!(parts(bad), None, "{bad:?}");
    }
}
