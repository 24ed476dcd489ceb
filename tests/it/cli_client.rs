//! The client subcommands (`put`, `get`, `list`, `delete`, `import`, `export`): the real binary
//! against a real server on port 0, on both backends. (`verify` and `put --verify` are tested
//! with the registries, in `verify.rs`, with [`run`].)

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;

use spec_provider::proto::registryfacade::ImageSpec;
use spec_provider::proto::registryfacade::content_layer::Spec as LayerSpec;
use spec_provider::proto::specprovider::v1::{
    GetSpecRequest, ListSpecsRequest, PutSpecRequest, SpecRecord, SpecView,
};
use tokio::io::AsyncWriteExt;
use tonic::Code;

use crate::app::{DEADLINE, TestApp, spawn_app};
use crate::db::Backend;
use crate::fixtures::{labels, minimal_spec, put};

on_both_backends!(
    put_get_list_and_delete_print_json_and_tables,
    import_creates_the_valid_entries_and_reports_each_invalid_one,
    import_reports_a_different_stored_spec_as_a_failure_naming_the_id,
    import_labels_what_it_creates_and_keeps_stored_labels,
    export_then_import_leaves_every_record_unchanged,
    a_rejected_put_names_the_code_and_every_field_violation,
);

const BIN: &str = env!("CARGO_BIN_EXE_spec-provider");

/// A file under `examples/`.
fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// The spec in `examples/spec.json`.
fn example_spec() -> ImageSpec {
    serde_json::from_str(&std::fs::read_to_string(example("spec.json")).unwrap()).unwrap()
}

/// The ids in `examples/fixed-spec.json`.
fn example_ids() -> BTreeSet<String> {
    let text = std::fs::read_to_string(example("fixed-spec.json")).unwrap();
    let entries: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    entries.keys().cloned().collect()
}

/// What a run of the binary left behind.
#[derive(Debug)]
pub(crate) struct Run {
    code: Option<i32>,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

impl Run {
    /// Fails the test unless the exit code is `code`.
    pub(crate) fn expect_code(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "{self:#?}");
        self
    }

    /// Stdout parsed as one JSON value.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not the expected JSON ({err}): {self:#?}"))
    }

    /// Stdout parsed as JSON lines.
    pub(crate) fn json_lines<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
            .collect()
    }
}

/// Runs the binary with `SPEC_PROVIDER_ADDR` set to `addr` and nothing else from the
/// environment; fails the test if it does not exit within the deadline.
pub(crate) async fn run_at(addr: &str, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut child = tokio::process::Command::new(BIN)
        .env_clear()
        .env("SPEC_PROVIDER_ADDR", addr)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting spec-provider");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).await.unwrap();
        drop(pipe);
    }
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("spec-provider {args:?} did not exit within {DEADLINE:?}"))
        .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Runs the binary against `app`.
pub(crate) async fn run(app: &TestApp, args: &[&str]) -> Run {
    run_at(&format!("http://{}", app.addr), args, None).await
}

/// Every live record, with its spec, in id order, straight from the server.
async fn all_records(app: &TestApp) -> Vec<SpecRecord> {
    let mut admin = app.admin.clone();
    let mut records = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_specs(ListSpecsRequest {
                page_size: 1000,
                page_token,
                view: SpecView::Full.into(),
                ..ListSpecsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        records.extend(page.specs);
        if page.next_page_token.is_empty() {
            return records;
        }
        page_token = page.next_page_token;
    }
}

/// A fixed spec file in a temporary directory: the example's entries plus `extra` ones.
fn fixed_spec_file_with(dir: &tempfile::TempDir, extra: serde_json::Value) -> PathBuf {
    let text = std::fs::read_to_string(example("fixed-spec.json")).unwrap();
    let mut entries: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).unwrap();
    entries.extend(extra.as_object().unwrap().clone());
    let path = dir.path().join("fixed-spec.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&entries).unwrap()).unwrap();
    path
}

/// Entries that each break one rule, by the field or id they break it with.
fn invalid_entries() -> serde_json::Value {
    let tar = base64_of(b"this is not a tar archive");
    serde_json::json!({
        "bad-digest": {
            "baseRef": "docker.io/library/ubuntu:24.04",
            "contentLayer": [{"remote": {
                "url": "https://content.example.com/l.tar.gz",
                "digest": "sha256:abc",
                "diffId": format!("sha256:{}", "ab".repeat(32)),
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "size": "10"
            }}]
        },
        "unknown-field": {
            "baseRef": "docker.io/library/ubuntu:24.04",
            "contentLayer": [{"direct": {"content": "", "compression": "gzip"}}]
        },
        "Not_A_Valid_Id": { "baseRef": "docker.io/library/ubuntu:24.04" },
        "not-a-tar": {
            "baseRef": "docker.io/library/ubuntu:24.04",
            "contentLayer": [{"direct": {"content": tar}}]
        },
        "no-base-ref": { "ideRef": "eu.gcr.io/gitpod-core/ide/code:commit-4c8638c0" }
    })
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The `failed` entries of an import report, by id.
fn failed_by_id(report: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The ids listed under `key` in an import report.
pub(crate) fn ids(report: &serde_json::Value, key: &str) -> BTreeSet<String> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {report}"))
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

async fn put_get_list_and_delete_print_json_and_tables(backend: Backend) {
    let app = spawn_app(backend).await;
    let spec_file = example("spec.json");
    let spec_file = spec_file.to_str().unwrap();

    // put from a file, JSON: the stored record.
    let record: SpecRecord = run(
        &app,
        &[
            "put",
            "ws-1",
            "--file",
            spec_file,
            "--label",
            "team=blue",
            "--ttl",
            "1h",
        ],
    )
    .await
    .expect_code(0)
    .json();
    assert_eq!(record.id, "ws-1");
    assert_eq!(record.generation, 1);
    assert_eq!(record.labels, labels(&[("team", "blue")]));
    assert!(record.expire_time.is_some());
    assert_eq!(record.spec, Some(example_spec()));

    // put from standard input (`-`), as a table.
    let minimal = serde_json::to_vec(&minimal_spec(1)).unwrap();
    let table = run_at(
        &format!("http://{}", app.addr),
        &["put", "ws-2", "-", "--output", "table"],
        Some(&minimal),
    )
    .await
    .expect_code(0);
    for expected in ["ws-2", "generation", "sha256:", "never"] {
        assert!(table.stdout.contains(expected), "{table:#?}");
    }

    // get: the spec, as one JSON line or (table mode) pretty-printed; --record the record.
    let spec: ImageSpec = run(&app, &["get", "ws-1", "--output", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(spec, example_spec());
    let pretty = run(&app, &["get", "ws-1", "--output", "table"])
        .await
        .expect_code(0);
    assert!(pretty.stdout.lines().count() > 10, "{pretty:#?}");
    assert_eq!(pretty.json::<ImageSpec>(), example_spec());
    let got: SpecRecord = run(&app, &["get", "ws-1", "--record"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(got.spec_digest, record.spec_digest);
    assert_eq!(got.labels, record.labels);

    // list: JSON lines by default (stdout is a pipe here), in id order, without specs.
    let listed: Vec<SpecRecord> = run(&app, &["list"]).await.expect_code(0).json_lines();
    let listed_ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(listed_ids, ["ws-1", "ws-2"]);
    assert!(listed.iter().all(|r| r.spec.is_none()));
    let full: Vec<SpecRecord> = run(&app, &["list", "--full"])
        .await
        .expect_code(0)
        .json_lines();
    assert_eq!(full[0].spec, Some(example_spec()));
    let blue: Vec<SpecRecord> = run(&app, &["list", "--label", "team=blue"])
        .await
        .expect_code(0)
        .json_lines();
    assert_eq!(blue.len(), 1);
    assert_eq!(blue[0].id, "ws-1");
    let by_prefix: Vec<SpecRecord> = run(&app, &["list", "--prefix", "ws-2"])
        .await
        .expect_code(0)
        .json_lines();
    assert_eq!(by_prefix.len(), 1);
    assert_eq!(by_prefix[0].id, "ws-2");
    let limited: Vec<SpecRecord> = run(&app, &["list", "--limit", "1"])
        .await
        .expect_code(0)
        .json_lines();
    assert_eq!(limited.len(), 1);

    let table = run(&app, &["list", "--output", "table"])
        .await
        .expect_code(0);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows: {table:#?}");
    for column in [
        "ID",
        "GENERATION",
        "LABELS",
        "UPDATED",
        "UPDATED BY",
        "EXPIRES",
        "SPEC DIGEST",
    ] {
        assert!(lines[0].contains(column), "{table:#?}");
    }
    assert!(
        lines[1].contains("ws-1") && lines[1].contains("team=blue"),
        "{table:#?}"
    );
    assert!(lines[1].contains(&record.spec_digest), "{table:#?}");
    assert!(
        lines[2].contains("ws-2") && lines[2].contains("never"),
        "{table:#?}"
    );

    // delete: a stale generation is refused, then it deletes, then the id is gone.
    let stale = run(&app, &["delete", "ws-2", "--expected-generation", "7"])
        .await
        .expect_code(1);
    assert!(stale.stderr.contains("Aborted"), "{stale:#?}");
    let deleted: serde_json::Value = run(&app, &["delete", "ws-2", "--expected-generation", "1"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(deleted, serde_json::json!({"id": "ws-2", "deleted": true}));
    let missing = run(&app, &["delete", "ws-2"]).await.expect_code(1);
    assert!(missing.stderr.contains("NotFound"), "{missing:#?}");
    let allowed: serde_json::Value = run(&app, &["delete", "ws-2", "--allow-missing"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(allowed["deleted"], false);
    let table = run(&app, &["delete", "ws-1", "--output", "table"])
        .await
        .expect_code(0);
    assert_eq!(table.stdout.trim(), "deleted \"ws-1\"");
    let gone = run(&app, &["get", "ws-1"]).await.expect_code(1);
    assert!(gone.stderr.contains("NotFound"), "{gone:#?}");
    assert!(all_records(&app).await.is_empty());
}

async fn import_creates_the_valid_entries_and_reports_each_invalid_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let file = fixed_spec_file_with(&dir, invalid_entries());
    let file = file.to_str().unwrap();
    let invalid: BTreeSet<String> = invalid_entries()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();

    // A dry run validates locally: it needs no server and sends nothing.
    let dry = run_at("http://127.0.0.1:9", &["import", file, "--dry-run"], None)
        .await
        .expect_code(1);
    let report: serde_json::Value = dry.json();
    assert_eq!(ids(&report, "valid"), example_ids());
    let failed = failed_by_id(&report);
    assert_eq!(failed.keys().cloned().collect::<BTreeSet<_>>(), invalid);
    assert!(failed["bad-digest"].contains("spec.content_layer[0].remote.digest"));
    assert!(failed["unknown-field"].contains("compression"));
    assert!(failed["unknown-field"].contains("contentLayer[0].direct"));
    assert!(failed["Not_A_Valid_Id"].starts_with("id: "));
    assert!(failed["not-a-tar"].contains("spec.content_layer[0].direct.content"));
    assert!(failed["no-base-ref"].contains("spec.base_ref"));
    for id in &invalid {
        assert!(dry.stderr.contains(&format!("{id:?}")), "{dry:#?}");
    }
    assert!(all_records(&app).await.is_empty());

    // The real import stores every valid entry and names every failure, on stderr and in the
    // report, with the server's field paths.
    let imported = run(&app, &["import", file]).await.expect_code(1);
    let report: serde_json::Value = imported.json();
    assert_eq!(ids(&report, "created"), example_ids());
    let failed = failed_by_id(&report);
    assert_eq!(failed.keys().cloned().collect::<BTreeSet<_>>(), invalid);
    assert!(failed["bad-digest"].contains("InvalidArgument"));
    assert!(failed["bad-digest"].contains("spec.content_layer[0].remote.digest"));
    assert!(failed["not-a-tar"].contains("spec.content_layer[0].direct.content"));
    assert!(failed["unknown-field"].contains("compression"));
    for id in &invalid {
        assert!(
            imported
                .stderr
                .contains(&format!("import of {id:?} failed")),
            "{imported:#?}"
        );
    }
    let stored: BTreeSet<String> = all_records(&app).await.into_iter().map(|r| r.id).collect();
    assert_eq!(stored, example_ids());

    // Importing it again changes nothing; the summary says so.
    let again = run(&app, &["import", file, "--output", "table"])
        .await
        .expect_code(1);
    assert_eq!(
        again.stdout.trim(),
        format!(
            "{file}: 0 created, 0 updated, {} unchanged, {} failed",
            example_ids().len(),
            invalid.len()
        )
    );

    // The example file on its own imports cleanly.
    let clean = run(
        &app,
        &["import", example("fixed-spec.json").to_str().unwrap()],
    )
    .await
    .expect_code(0);
    assert_eq!(ids(&clean.json(), "unchanged"), example_ids());
    assert!(clean.stderr.is_empty(), "{clean:#?}");
}

async fn import_reports_a_different_stored_spec_as_a_failure_naming_the_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let taken = "c9d8e7f6-1a2b-4c3d-9e8f-7a6b5c4d3e2f";
    assert!(example_ids().contains(taken));
    app.admin
        .clone()
        .put_spec(put(taken, minimal_spec(7)))
        .await
        .unwrap();

    let run = run(
        &app,
        &["import", example("fixed-spec.json").to_str().unwrap()],
    )
    .await
    .expect_code(1);
    let report: serde_json::Value = run.json();
    let failed = failed_by_id(&report);
    assert_eq!(failed.len(), 1, "{report}");
    assert!(failed[taken].contains("AlreadyExists"), "{report}");
    assert!(run.stderr.contains(&format!("import of {taken:?} failed")));
    assert!(run.stderr.contains("AlreadyExists"));
    assert_eq!(ids(&report, "created").len(), example_ids().len() - 1);

    // The stored spec was not replaced.
    let stored = app
        .admin
        .clone()
        .get_spec(GetSpecRequest { id: taken.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.spec, Some(minimal_spec(7)));
    assert_eq!(stored.generation, 1);
}

async fn import_labels_what_it_creates_and_keeps_stored_labels(backend: Backend) {
    let app = spawn_app(backend).await;
    let kept = "a1b2c3d4-5678-90ab-cdef-1234567890ab";
    app.admin
        .clone()
        .put_spec(PutSpecRequest {
            labels: labels(&[("team", "blue")]),
            ..put(kept, example_spec())
        })
        .await
        .unwrap();

    let file = example("fixed-spec.json");
    let report: serde_json::Value = run(
        &app,
        &["import", file.to_str().unwrap(), "--label", "source=facade"],
    )
    .await
    .expect_code(0)
    .json();
    assert_eq!(ids(&report, "updated"), BTreeSet::from([kept.to_owned()]));
    assert_eq!(ids(&report, "created").len(), example_ids().len() - 1);
    for record in all_records(&app).await {
        assert_eq!(record.labels["source"], "facade", "{record:?}");
        if record.id == kept {
            assert_eq!(record.labels["team"], "blue");
            assert_eq!(record.generation, 2);
        }
    }

    let bad = run(
        &app,
        &["import", file.to_str().unwrap(), "--label", "Bad Key=x"],
    )
    .await
    .expect_code(1);
    assert!(bad.stderr.contains("invalid labels"), "{bad:#?}");
}

async fn export_then_import_leaves_every_record_unchanged(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut admin = app.admin.clone();
    run(
        &app,
        &["import", example("fixed-spec.json").to_str().unwrap()],
    )
    .await
    .expect_code(0);
    // More records than an export page holds, some with labels and an expiry.
    for n in 0..120 {
        admin
            .put_spec(PutSpecRequest {
                labels: labels(&[("batch", if n % 2 == 0 { "even" } else { "odd" })]),
                ttl: (n % 3 == 0).then_some(pbjson_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                ..put(&format!("bulk-{n:03}"), minimal_spec(n))
            })
            .await
            .unwrap();
    }
    let before = all_records(&app).await;
    assert_eq!(before.len(), 120 + example_ids().len());

    let exported = run(&app, &["export"]).await.expect_code(0);
    let entries: serde_json::Map<String, serde_json::Value> = exported.json();
    let exported_ids: Vec<&String> = entries.keys().collect();
    let stored_ids: Vec<&String> = before.iter().map(|r| &r.id).collect();
    assert_eq!(exported_ids, stored_ids);
    for record in &before {
        let spec: ImageSpec = serde_json::from_value(entries[&record.id].clone()).unwrap();
        assert_eq!(Some(spec), record.spec, "{}", record.id);
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.json");
    std::fs::write(&file, &exported.stdout).unwrap();
    let report: serde_json::Value = run(&app, &["import", file.to_str().unwrap()])
        .await
        .expect_code(0)
        .json();
    assert_eq!(ids(&report, "unchanged").len(), before.len(), "{report}");
    // Generation, update time, digest, labels, expiry: all as they were.
    assert_eq!(all_records(&app).await, before);

    // Filters narrow the export.
    let odd: serde_json::Map<String, serde_json::Value> = run(
        &app,
        &["export", "--label", "batch=odd", "--prefix", "bulk-00"],
    )
    .await
    .expect_code(0)
    .json();
    let odd_ids: Vec<&str> = odd.keys().map(String::as_str).collect();
    assert_eq!(
        odd_ids,
        ["bulk-001", "bulk-003", "bulk-005", "bulk-007", "bulk-009"]
    );
}

async fn a_rejected_put_names_the_code_and_every_field_violation(backend: Backend) {
    let app = spawn_app(backend).await;
    let spec = serde_json::json!({
        "baseRef": "",
        "contentLayer": [{"remote": {
            "url": "http://content.example.com/l.tar.gz",
            "digest": "sha256:abc",
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "size": "0"
        }}]
    });
    let rejected = run_at(
        &format!("http://{}", app.addr),
        &["put", "ws-1"],
        Some(spec.to_string().as_bytes()),
    )
    .await
    .expect_code(1);
    let stderr = rejected.stderr.trim();
    assert_eq!(stderr.lines().count(), 1, "{rejected:#?}");
    assert!(stderr.starts_with("spec-provider: put \"ws-1\" was rejected with InvalidArgument"));
    for field in [
        "spec.base_ref",
        "spec.content_layer[0].remote.url",
        "spec.content_layer[0].remote.digest",
        "spec.content_layer[0].remote.diff_id",
        "spec.content_layer[0].remote.size",
    ] {
        assert!(stderr.contains(field), "{field} missing: {stderr}");
    }
    let status = app
        .admin
        .clone()
        .get_spec(GetSpecRequest { id: "ws-1".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // An unknown field never reaches the server: it is named, with its path, before sending.
    let unknown = serde_json::json!({"baseRef": "ubuntu:24.04", "ideRefs": ["x"]});
    let rejected = run_at(
        &format!("http://{}", app.addr),
        &["put", "ws-1", "-"],
        Some(unknown.to_string().as_bytes()),
    )
    .await
    .expect_code(1);
    assert!(
        rejected.stderr.contains("unknown field `ideRefs`"),
        "{rejected:#?}"
    );
}

#[tokio::test]
async fn an_unreachable_server_or_a_bad_address_is_said_plainly() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("http://127.0.0.1:{port}");
    for args in [
        &["get", "ws-1"][..],
        &["list"],
        &["put", "ws-1", example("spec.json").to_str().unwrap()],
        &["delete", "ws-1"],
        &["export"],
        &["import", example("fixed-spec.json").to_str().unwrap()],
    ] {
        let run = run_at(&addr, args, None).await.expect_code(1);
        assert!(
            run.stderr.starts_with(&format!(
                "spec-provider: cannot reach spec-provider at {addr}"
            )),
            "{args:?}: {run:#?}"
        );
        assert!(run.stderr.contains("Connection refused"), "{run:#?}");
        assert_eq!(run.stderr.trim().lines().count(), 1, "{run:#?}");
    }

    let run = run_at("127.0.0.1:8080", &["list"], None)
        .await
        .expect_code(1);
    assert!(
        run.stderr.contains("is not a valid server address"),
        "{run:#?}"
    );
    let run = run_at("https://127.0.0.1:8080", &["list"], None)
        .await
        .expect_code(1);
    assert!(run.stderr.contains("give --ca"), "{run:#?}");
}

#[tokio::test]
async fn usage_errors_exit_two() {
    for args in [
        &["put"][..],
        &["get"],
        &["list", "--limit", "many"],
        &["list", "--output", "yaml"],
        &["list", "--label", "no-equals-sign"],
        &["put", "ws-1", "--ttl", "forever"],
        &["import"],
    ] {
        let run = run_at("http://127.0.0.1:9", args, None).await;
        assert_eq!(run.code, Some(2), "{args:?}: {run:#?}");
    }
}

#[test]
fn the_example_direct_layer_is_an_uncompressed_tar_archive() {
    let spec = example_spec();
    let direct = spec
        .content_layer
        .iter()
        .find_map(|layer| match &layer.spec {
            Some(LayerSpec::Direct(direct)) => Some(direct),
            _ => None,
        })
        .expect("examples/spec.json has a direct layer");
    let mut archive = tar::Archive::new(direct.content.as_slice());
    let paths: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|entry| entry.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        paths.contains(&"workspace/README.md".to_owned()),
        "{paths:?}"
    );
    assert!(
        spec.content_layer
            .iter()
            .any(|layer| matches!(layer.spec, Some(LayerSpec::Remote(_))))
    );
    assert!(!spec.base_ref.is_empty() && !spec.ide_ref.is_empty());
    assert!(!spec.supervisor_ref.is_empty() && !spec.ide_layer_ref.is_empty());
}
