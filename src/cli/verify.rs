//! `verify ID` and `verify --file FILE`: the server checks a spec against its registries and
//! answers one check per image reference and remote content layer.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use comfy_table::{Table, presets};

use crate::domain::verification::{Check, Report};
use crate::proto::specprovider::v1::{VerifySpecRequest, VerifySpecResponse, verify_spec_request};

use super::client::{ClientArgs, status_error};
use super::input::read_spec_file;
use super::output::{OutputFormat, write_json};

/// `verify ID | --file FILE`
#[derive(Debug, clap::Args)]
pub(super) struct VerifyArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The id of a stored spec.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    id: Option<String>,
    /// A spec to check without storing it (protobuf JSON mapping; `-` reads standard input).
    #[arg(long, short)]
    file: Option<PathBuf>,
}

/// Asks the server to verify; prints a table (field, reference, result, digest or error) or one
/// JSON object, and exits 0 when every check passed, 1 otherwise.
pub(super) async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let (target, action) = match (&args.id, &args.file) {
        (Some(id), _) => (
            verify_spec_request::Target::Id(id.clone()),
            format!("verify {id:?}"),
        ),
        (None, Some(path)) => (
            verify_spec_request::Target::Spec(read_spec_file(path)?),
            format!("verify {}", path.display()),
        ),
        (None, None) => anyhow::bail!("give the id of a stored spec, or --file FILE"),
    };
    let mut admin = args.client.connect_verifying().await?;
    let response = admin
        .verify_spec(VerifySpecRequest {
            target: Some(target),
        })
        .await
        .map_err(|status| status_error(&action, &status))?
        .into_inner();
    let report = report_from(response);
    let mut out = std::io::stdout().lock();
    match args.client.output() {
        OutputFormat::Table => writeln!(out, "{}", report_table(&report))?,
        OutputFormat::Json => write_json(&mut out, &report, false)?,
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The answer as a report, whose JSON has `null` for an absent digest or error.
fn report_from(response: VerifySpecResponse) -> Report {
    let present = |text: String| (!text.is_empty()).then_some(text);
    Report {
        ok: response.ok,
        checks: response
            .checks
            .into_iter()
            .map(|check| Check {
                field: check.field,
                reference: check.reference,
                ok: check.ok,
                digest: present(check.digest),
                error: present(check.error),
            })
            .collect(),
    }
}

/// One row per check: field, reference, `ok` or `FAILED`, and the digest or the error.
fn report_table(report: &Report) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.set_header(vec!["FIELD", "REFERENCE", "RESULT", "DIGEST OR ERROR"]);
    for check in &report.checks {
        let (result, detail) = if check.ok {
            ("ok", check.digest.clone().unwrap_or_default())
        } else {
            ("FAILED", check.error.clone().unwrap_or_default())
        };
        table.add_row(vec![
            check.field.clone(),
            check.reference.clone(),
            result.to_owned(),
            detail,
        ]);
    }
    table
}
