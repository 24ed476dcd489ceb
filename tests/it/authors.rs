//! Who wrote each spec, end to end: the `created_by` and `updated_by` a real server records for
//! bearer tokens, client certificates and callers without credentials, on both backends, and
//! what the CLI shows, exports and imports of them. Neither a record nor an error ever holds a
//! token (the log lines: `security::tokens_never_appear_in_the_logs`).

use std::sync::Arc;

use rcgen::ExtendedKeyUsagePurpose;
use spec_provider::config::{Secret, Settings};
use spec_provider::proto::specprovider::v1::spec_admin_client::SpecAdminClient;
use spec_provider::proto::specprovider::v1::{
    DeleteSpecRequest, GetSpecRequest, ListSpecsRequest, PutSpecRequest, SpecRecord,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::app::{TestApp, spawn_app, spawn_app_with, wait_for_health};
use crate::cli_client::{ids, run_at};
use crate::db::Backend;
use crate::fixtures::{labels, minimal_spec, put, with_token};
use crate::security::{Ca, ServerFiles, client_config, spawn_tls_app_on, tls_channel};

/// The admin tokens of two writers.
const WRITER_A: &str = "writer-a-4c1f9e2b7d";
/// See [`WRITER_A`].
const WRITER_B: &str = "writer-b-8e3a5d0c6f";

on_both_backends!(
    tokens_are_named_by_their_digest_and_never_shown,
    a_client_certificate_is_named_by_the_name_that_granted_the_role,
    callers_without_credentials_are_anonymous,
    importing_an_export_keeps_who_wrote_and_another_server_records_the_importer,
);

/// A server on `backend` that takes both writers' tokens as admin tokens.
async fn spawn_with_writers(backend: Backend) -> TestApp {
    spawn_app_with(backend, |settings: &mut Settings| {
        settings.auth.admin_tokens = vec![Secret::new(WRITER_A), Secret::new(WRITER_B)];
    })
    .await
}

/// How a record names the holder of `token`: `token:` and the first 12 hex digits of what
/// `printf %s TOKEN | sha256sum` prints, as the README tells operators to compute it.
fn token_name(token: &str) -> String {
    let output = std::process::Command::new("sh")
        .args(["-c", "printf %s \"$1\" | sha256sum", "sh", token])
        .output()
        .expect("running sha256sum");
    assert!(output.status.success(), "{output:?}");
    let digest = String::from_utf8(output.stdout).unwrap();
    format!("token:{}", &digest[..12])
}

/// Who created and who last changed `record`.
fn authors(record: &SpecRecord) -> (&str, &str) {
    (&record.created_by, &record.updated_by)
}

/// GetSpec of `ws-1`, with `token`.
async fn read(admin: &mut SpecAdminClient<Channel>, token: &str) -> SpecRecord {
    let request = with_token(GetSpecRequest { id: "ws-1".into() }, token);
    admin.get_spec(request).await.unwrap().into_inner()
}

/// Gives `ws-1` (a minimal spec 1) a new label, with `token`: the record as changed.
async fn relabel(admin: &mut SpecAdminClient<Channel>, token: &str) -> SpecRecord {
    let request = PutSpecRequest {
        labels: labels(&[("team", "blue")]),
        ..put("ws-1", minimal_spec(1))
    };
    admin
        .put_spec(with_token(request, token))
        .await
        .unwrap()
        .into_inner()
}

async fn tokens_are_named_by_their_digest_and_never_shown(backend: Backend) {
    let app = spawn_with_writers(backend).await;
    let mut admin = app.admin.clone();
    let (a, b) = (token_name(WRITER_A), token_name(WRITER_B));

    let created = admin
        .put_spec(with_token(put("ws-1", minimal_spec(1)), WRITER_A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(authors(&created), (a.as_str(), a.as_str()));

    // The same put from B changes nothing, so it names no one new.
    let repeated = admin
        .put_spec(with_token(put("ws-1", minimal_spec(1)), WRITER_B))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeated, created);

    let relabelled = relabel(&mut admin, WRITER_B).await;
    assert_eq!(authors(&relabelled), (a.as_str(), b.as_str()));

    // GetSpec and ListSpecs read what was stored.
    let got = read(&mut admin, WRITER_A).await;
    assert_eq!(got, relabelled);
    let listed = admin
        .list_specs(with_token(ListSpecsRequest::default(), WRITER_A))
        .await
        .unwrap()
        .into_inner()
        .specs;
    assert_eq!(
        listed,
        [SpecRecord {
            spec: None,
            ..relabelled.clone()
        }]
    );

    // Refused writes name no one, and their errors show no token.
    let different = admin
        .put_spec(with_token(put("ws-1", minimal_spec(2)), WRITER_A))
        .await
        .unwrap_err();
    assert_eq!(different.code(), Code::AlreadyExists);
    let unknown = admin
        .put_spec(with_token(
            put("ws-1", minimal_spec(2)),
            "not-a-writer-1b2c",
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    let stored = read(&mut admin, WRITER_A).await;
    assert_eq!(stored, relabelled);
    let shown = format!("{stored:?} {different:?} {unknown:?}");
    for token in [WRITER_A, WRITER_B, "not-a-writer-1b2c"] {
        assert!(!shown.contains(token), "{shown}");
    }
}

async fn a_client_certificate_is_named_by_the_name_that_granted_the_role(backend: Backend) {
    let ca = Ca::new("test CA");
    let files = ServerFiles::new(&ca, &ca.server());
    let app = spawn_tls_app_on(backend, |settings| {
        files.configure(settings, true);
        settings.auth.admin_subjects = vec!["ws-manager-client".into()];
        settings.auth.admin_tokens = vec![Secret::new(WRITER_A)];
    })
    .await;
    let connect = async |names: &[&str], common_name: &str| -> SpecAdminClient<Channel> {
        let pair = ca.issue(names, common_name, ExtendedKeyUsagePurpose::ClientAuth);
        let config = client_config(&ca.pem(), Some(&pair), rustls::DEFAULT_VERSIONS);
        let channel = tls_channel(app.addr, config, Arc::default()).await.unwrap();
        wait_for_health(&channel, ServingStatus::Serving).await;
        SpecAdminClient::new(channel)
    };

    // The DNS name listed in auth.admin_subjects, not the certificate's first name or its
    // common name.
    let mut manager = connect(&["other.example", "ws-manager-client"], "someone").await;
    let created = manager
        .put_spec(put("ws-1", minimal_spec(1)))
        .await
        .unwrap()
        .into_inner();
    let cert = "cert:ws-manager-client";
    assert_eq!(authors(&created), (cert, cert));

    // A certificate that grants nothing, with the admin token: the token granted the role.
    let mut stranger = connect(&[], "stranger").await;
    let relabelled = relabel(&mut stranger, WRITER_A).await;
    assert_eq!(authors(&relabelled), (cert, token_name(WRITER_A).as_str()));

    let delete = DeleteSpecRequest {
        id: "ws-1".into(),
        expected_generation: Some(relabelled.generation),
        allow_missing: false,
    };
    assert!(
        manager
            .delete_spec(delete)
            .await
            .unwrap()
            .into_inner()
            .deleted
    );
}

async fn callers_without_credentials_are_anonymous(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .admin
        .clone()
        .put_spec(put("ws-1", minimal_spec(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(authors(&created), ("anonymous", "anonymous"));
}

/// Fails unless every one of `records` was created by `created` and last changed by `updated`.
fn assert_written_by(records: &[SpecRecord], created: &str, updated: &str) {
    assert!(
        records.iter().all(|r| authors(r) == (created, updated)),
        "not all created by {created} and updated by {updated}: {records:?}"
    );
}

/// Runs the CLI against `app` with `token`.
async fn cli(app: &TestApp, token: &str, args: &[&str]) -> crate::cli_client::Run {
    let mut all = args.to_vec();
    all.extend(["--token", token]);
    run_at(&format!("http://{}", app.addr), &all, None).await
}

async fn importing_an_export_keeps_who_wrote_and_another_server_records_the_importer(
    backend: Backend,
) {
    let app = spawn_with_writers(backend).await;
    let (a, b) = (token_name(WRITER_A), token_name(WRITER_B));
    for id in ["ws-1", "ws-2"] {
        app.admin
            .clone()
            .put_spec(with_token(put(id, minimal_spec(1)), WRITER_A))
            .await
            .unwrap();
    }
    let list = async |app: &TestApp| -> Vec<SpecRecord> {
        cli(app, WRITER_B, &["list", "--output", "json"])
            .await
            .expect_code(0)
            .json_lines()
    };
    let before = list(&app).await;
    assert_written_by(&before, &a, &a);

    // B exports and imports it back: nothing changes, so A still wrote every record.
    let exported = cli(&app, WRITER_B, &["export"]).await.expect_code(0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.json");
    std::fs::write(&file, &exported.stdout).unwrap();
    let file = file.to_str().unwrap();
    let report: serde_json::Value = cli(&app, WRITER_B, &["import", file, "--output", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(ids(&report, "unchanged").len(), 2, "{report}");
    assert_eq!(list(&app).await, before);

    // An import that adds a label changes the records: B changed them.
    cli(&app, WRITER_B, &["import", file, "--label", "from=export"])
        .await
        .expect_code(0);
    let relabelled = list(&app).await;
    assert_written_by(&relabelled, &a, &b);

    // Into another server, the importer creates them: the export carries specs, not authors.
    let other = spawn_with_writers(backend).await;
    cli(&other, WRITER_B, &["import", file])
        .await
        .expect_code(0);
    let imported = list(&other).await;
    assert_eq!(imported.len(), 2);
    assert_written_by(&imported, &b, &b);

    // get --record and list print them: JSON names them createdBy and updatedBy.
    let record: serde_json::Value = cli(&app, WRITER_A, &["get", "ws-1", "--record"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(record["createdBy"], a.as_str());
    assert_eq!(record["updatedBy"], b.as_str());
    // The table `put` prints, here for a put that changes nothing.
    let spec = serde_json::to_vec(&minimal_spec(1)).unwrap();
    let addr = format!("http://{}", app.addr);
    let table = run_at(
        &addr,
        &[
            "put",
            "ws-1",
            "-",
            "--label",
            "from=export",
            "--output",
            "table",
            "--token",
            WRITER_A,
        ],
        Some(&spec),
    );
    let table = table.await.expect_code(0).stdout;
    for (row, name) in [("created by", &a), ("updated by", &b)] {
        assert!(
            table
                .lines()
                .any(|l| l.trim().starts_with(row) && l.trim().ends_with(name.as_str())),
            "no row {row:?} naming {name} in\n{table}"
        );
    }
    let table = cli(&app, WRITER_A, &["list", "--output", "table"])
        .await
        .expect_code(0)
        .stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].contains("UPDATED BY"), "{table}");
    assert!(
        lines[1].contains("ws-1") && lines[1].contains(&b),
        "{table}"
    );
    for token in [WRITER_A, WRITER_B] {
        assert!(!table.contains(token) && !exported.stdout.contains(token));
    }
}
