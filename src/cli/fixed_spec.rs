//! `import` and `export` of a registry facade's fixed spec file (`fixedSpecFN`): one JSON object
//! mapping id to ImageSpec in the protobuf JSON mapping.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tonic::Code;

use crate::config::Settings;
use crate::domain::SpecId;
use crate::domain::validate::{ValidationRules, validate_labels, validate_spec};
use crate::proto::registryfacade::ImageSpec;
use crate::proto::specprovider::v1::{GetSpecRequest, ListSpecsRequest, PutSpecRequest, SpecView};

use super::client::{AdminClient, ClientArgs, describe_status, status_error};
use super::input::parse_spec;
use super::output::{OutputFormat, write_json};
use super::specs::{FilterArgs, labels_from, parse_label};

/// Entries imported at once: enough to hide round trips, few enough not to crowd the server.
const IMPORT_CONCURRENCY: usize = 8;

/// Imports with fewer entries finish before a progress bar would tell anything.
const PROGRESS_MIN_ENTRIES: usize = 100;

/// Records per page while exporting; pages carry whole specs (up to 16 MiB each), so small.
const EXPORT_PAGE_SIZE: i32 = 50;

/// `import FILE [--dry-run] [--label k=v]...`
#[derive(Debug, clap::Args)]
pub(super) struct ImportArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// A registry facade fixed spec file: a JSON object mapping id to ImageSpec.
    file: PathBuf,
    /// Only validate every entry, locally, with the server's default rules; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// A label to add to every imported record (repeatable); labels already stored are kept.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

/// `export [--prefix P] [--label k=v]...`
#[derive(Debug, clap::Args)]
pub(super) struct ExportArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    filter: FilterArgs,
}

/// The entries of a fixed spec file, in id order; an entry that is not an ImageSpec carries the
/// reason instead.
fn read_fixed_spec_file(
    path: &PathBuf,
) -> anyhow::Result<Vec<(String, Result<ImageSpec, String>)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let entries: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| {
            format!(
                "{} is not a fixed spec file (a JSON object mapping id to ImageSpec)",
                path.display()
            )
        })?;
    Ok(entries
        .into_iter()
        .map(|(id, value)| (id, parse_spec(value)))
        .collect())
}

/// What importing one entry did.
enum Outcome {
    Created,
    Updated,
    Unchanged,
    Failed(String),
}

/// The ids in each outcome, as printed in JSON.
#[derive(Debug, Default, Serialize)]
struct ImportReport {
    created: Vec<String>,
    updated: Vec<String>,
    unchanged: Vec<String>,
    failed: Vec<Failure>,
}

/// One entry that could not be imported (or, in a dry run, is invalid).
#[derive(Debug, Serialize)]
struct Failure {
    id: String,
    error: String,
}

/// What a dry run found, as printed in JSON.
#[derive(Debug, Default, Serialize)]
struct DryRunReport {
    valid: Vec<String>,
    failed: Vec<Failure>,
}

/// Imports every valid entry, reports each failure on stderr and a summary on stdout; exits 1 if
/// any entry failed.
pub(super) async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let entries = read_fixed_spec_file(&args.file)?;
    let labels = labels_from(&args.labels)?;
    let label_violations = validate_labels("--label", &labels.clone().into_iter().collect());
    if !label_violations.is_empty() {
        let listed: Vec<String> = label_violations.iter().map(ToString::to_string).collect();
        anyhow::bail!("invalid labels: {}", listed.join("; "));
    }
    let format = args.client.output();
    if args.dry_run {
        return dry_run(entries, format);
    }

    // Each entry is a put, which the server's verify.required may have it verify.
    let admin = args.client.connect_verifying().await?;
    let progress = progress_bar(entries.len());
    let mut report = ImportReport::default();
    let mut outcomes = futures::stream::iter(entries)
        .map(|(id, spec)| {
            let admin = admin.clone();
            let labels = &labels;
            async move {
                let outcome = import_one(admin, &id, spec, labels).await;
                (id, outcome)
            }
        })
        .buffer_unordered(IMPORT_CONCURRENCY);
    while let Some((id, outcome)) = outcomes.next().await {
        progress.inc(1);
        match outcome {
            Outcome::Created => report.created.push(id),
            Outcome::Updated => report.updated.push(id),
            Outcome::Unchanged => report.unchanged.push(id),
            Outcome::Failed(error) => {
                progress.suspend(|| eprintln!("spec-provider: import of {id:?} failed: {error}"));
                report.failed.push(Failure { id, error });
            }
        }
    }
    progress.finish_and_clear();
    // Entries finish in any order; sorted lists read (and compare) better.
    report.created.sort();
    report.updated.sort();
    report.unchanged.sort();
    report.failed.sort_by(|a, b| a.id.cmp(&b.id));

    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Json => write_json(&mut out, &report, false)?,
        OutputFormat::Table => writeln!(
            out,
            "{}: {} created, {} updated, {} unchanged, {} failed",
            args.file.display(),
            report.created.len(),
            report.updated.len(),
            report.unchanged.len(),
            report.failed.len()
        )?,
    }
    Ok(exit_code(report.failed.is_empty()))
}

/// Imports one entry. The stored record is read first so that its labels are kept (a put sets
/// labels wholesale) and so that "created" and "unchanged" can be told apart; the server decides
/// whether the spec is the same, since it normalizes specs before comparing.
async fn import_one(
    mut admin: AdminClient,
    id: &str,
    spec: Result<ImageSpec, String>,
    labels: &HashMap<String, String>,
) -> Outcome {
    let spec = match spec {
        Ok(spec) => spec,
        Err(err) => return Outcome::Failed(format!("not an ImageSpec: {err}")),
    };
    if let Err(err) = SpecId::parse(id) {
        return Outcome::Failed(format!("the id is invalid: {err}"));
    }
    let stored = match admin.get_spec(GetSpecRequest { id: id.to_owned() }).await {
        Ok(record) => Some(record.into_inner()),
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => {
            return Outcome::Failed(describe_status("reading the stored record", &status));
        }
    };
    let mut put_labels = stored
        .as_ref()
        .map(|record| record.labels.clone())
        .unwrap_or_default();
    put_labels.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    let request = PutSpecRequest {
        id: id.to_owned(),
        spec: Some(spec),
        labels: put_labels,
        // Absent a moment ago: 0 keeps a record created meanwhile from getting these labels.
        // Present: no expected generation, so that a different spec is refused, not replaced.
        expected_generation: stored.is_none().then_some(0),
        ..PutSpecRequest::default()
    };
    match admin.put_spec(request).await {
        Ok(record) => match stored {
            None => Outcome::Created,
            Some(before) if before.generation == record.get_ref().generation => Outcome::Unchanged,
            Some(_) => Outcome::Updated,
        },
        Err(status) => Outcome::Failed(describe_status("put", &status)),
    }
}

/// Validates every entry as the server would with its default settings, without a server.
fn dry_run(
    entries: Vec<(String, Result<ImageSpec, String>)>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let defaults = Settings::default();
    let rules = ValidationRules {
        allow_http_urls: defaults.validation.allow_http_urls,
        max_spec_bytes: defaults.limits.max_spec_bytes,
    };
    let mut report = DryRunReport::default();
    for (id, spec) in entries {
        let mut problems = Vec::new();
        if let Err(err) = SpecId::parse(&id) {
            problems.push(format!("id: {err}"));
        }
        match spec {
            Ok(spec) => {
                if let Err(violations) = validate_spec("spec", Some(&spec), &rules) {
                    problems.extend(violations.iter().map(ToString::to_string));
                }
            }
            Err(err) => problems.push(format!("not an ImageSpec: {err}")),
        }
        if problems.is_empty() {
            report.valid.push(id);
        } else {
            let error = problems.join("; ");
            eprintln!("spec-provider: {id:?} is invalid: {error}");
            report.failed.push(Failure { id, error });
        }
    }
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Json => write_json(&mut out, &report, false)?,
        OutputFormat::Table => writeln!(
            out,
            "dry run: {} valid, {} failed (nothing was sent)",
            report.valid.len(),
            report.failed.len()
        )?,
    }
    Ok(exit_code(report.failed.is_empty()))
}

/// A progress bar on stderr for a large import at a terminal; hidden otherwise, so that logs and
/// pipes get no control characters.
fn progress_bar(entries: usize) -> ProgressBar {
    if entries < PROGRESS_MIN_ENTRIES || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    ProgressBar::new(entries as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} entries, {eta} left")
            .expect("the progress template is valid"),
    )
}

fn exit_code(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Writes every matching record as a fixed spec file to stdout, one entry per line, page by page
/// (so an export of many large specs never sits in memory whole).
pub(super) async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let labels = labels_from(&args.filter.labels)?;
    let mut admin = args.client.connect().await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut page_token = String::new();
    let mut first = true;
    write!(out, "{{")?;
    loop {
        let page = admin
            .list_specs(ListSpecsRequest {
                page_size: EXPORT_PAGE_SIZE,
                page_token: std::mem::take(&mut page_token),
                id_prefix: args.filter.prefix.clone().unwrap_or_default(),
                labels: labels.clone(),
                view: SpecView::Full.into(),
            })
            .await
            .map_err(|status| status_error("export", &status))?
            .into_inner();
        for record in page.specs {
            write!(out, "{}\n  ", if first { "" } else { "," })?;
            first = false;
            serde_json::to_writer(&mut out, &record.id)?;
            write!(out, ": ")?;
            serde_json::to_writer(&mut out, &record.spec.unwrap_or_default())?;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    writeln!(out, "\n}}")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
