//! `put`, `get`, `list` and `delete`: one record at a time, or a listing.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::domain::MAX_PAGE_SIZE;
use crate::proto::specprovider::v1::{
    DeleteSpecRequest, GetSpecRequest, ListSpecsRequest, PutSpecRequest, SpecView,
};

use super::client::{ClientArgs, status_error};
use super::input::read_spec_file;
use super::output::{OutputFormat, record_table, records_table, write_json};

/// `put ID [FILE | --file FILE] [--label k=v]... [--ttl 1h] [--expected-generation N] [--verify]
/// [--pin]`
#[derive(Debug, clap::Args)]
pub(super) struct PutArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The record's id.
    id: String,
    /// The spec (protobuf JSON mapping); `-` or nothing reads standard input.
    #[arg(value_name = "FILE", conflicts_with = "file")]
    source: Option<PathBuf>,
    /// The spec file, as an alternative to the positional FILE.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// A label to store with the record (repeatable); the record's labels become exactly these.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Expire the record after this long (e.g. 1h, 30m); a repeated put renews it like a lease.
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// Only write if the stored generation is this (0: only if the id is not stored yet); needed
    /// to replace a spec with a different one.
    #[arg(long)]
    expected_generation: Option<i64>,
    /// Have the server check the spec against its registries first (see `verify`), and store
    /// nothing if a check fails.
    #[arg(long)]
    verify: bool,
    /// Verify, and store every tagged image reference pinned to the digest it resolved to
    /// (name:tag@sha256:...), so that every node pulls the same image.
    #[arg(long)]
    pin: bool,
}

/// `get ID [--record]`
#[derive(Debug, clap::Args)]
pub(super) struct GetArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The record's id.
    id: String,
    /// Print the whole record (labels, generation, times, digest), not just the spec.
    #[arg(long)]
    record: bool,
}

/// Which records `list` and `export` take: `[--prefix P] [--label k=v]...`.
#[derive(Debug, clap::Args)]
pub(super) struct FilterArgs {
    /// Only ids that start with this.
    #[arg(long)]
    pub(super) prefix: Option<String>,
    /// Only records carrying this label (repeatable: all must match).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub(super) labels: Vec<(String, String)>,
}

/// `list [--prefix P] [--label k=v]... [--full] [--limit N]`
#[derive(Debug, clap::Args)]
pub(super) struct ListArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// Include each record's spec (JSON), or its base image (table).
    #[arg(long)]
    full: bool,
    /// Stop after this many records.
    #[arg(long)]
    limit: Option<usize>,
}

/// `delete ID [--allow-missing] [--expected-generation N]`
#[derive(Debug, clap::Args)]
pub(super) struct DeleteArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The record's id.
    id: String,
    /// Succeed (printing that nothing was deleted) when the id is not stored.
    #[arg(long)]
    allow_missing: bool,
    /// Only delete if the stored generation is this.
    #[arg(long)]
    expected_generation: Option<i64>,
}

/// Parses a `KEY=VALUE` label flag; the server checks the syntax of both parts.
pub(super) fn parse_label(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{raw:?} is not KEY=VALUE"))
}

/// Labels from flags; a key given twice is a mistake worth stopping for.
pub(super) fn labels_from(pairs: &[(String, String)]) -> anyhow::Result<HashMap<String, String>> {
    let mut labels = HashMap::new();
    for (key, value) in pairs {
        if labels.insert(key.clone(), value.clone()).is_some() {
            anyhow::bail!("--label {key:?} is given more than once");
        }
    }
    Ok(labels)
}

/// Stores a spec read from a file or standard input; prints the stored record.
pub(super) async fn put(args: PutArgs) -> anyhow::Result<ExitCode> {
    let Some(path) = args.file.or(args.source).or_else(|| {
        // Waiting silently on a terminal would look like a hang; an explicit `-` still reads it.
        (!std::io::stdin().is_terminal()).then(|| "-".into())
    }) else {
        anyhow::bail!("give the spec as FILE, --file FILE, or on standard input (`-`)");
    };
    let spec = read_spec_file(&path)?;
    let request = PutSpecRequest {
        id: args.id.clone(),
        spec: Some(spec),
        labels: labels_from(&args.labels)?,
        expected_generation: args.expected_generation,
        ttl: args.ttl.map(duration_to_proto).transpose()?,
        verify: args.verify,
        pin_references: args.pin,
    };
    // Even without --verify or --pin, the server's verify.required may have it verify.
    let mut admin = args.client.connect_verifying().await?;
    let record = admin
        .put_spec(request)
        .await
        .map_err(|status| status_error(&format!("put {:?}", args.id), &status))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    match args.client.output() {
        OutputFormat::Table => writeln!(out, "{}", record_table(&record))?,
        OutputFormat::Json => write_json(&mut out, &record, false)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A protobuf Duration; the server checks the range.
fn duration_to_proto(duration: Duration) -> anyhow::Result<pbjson_types::Duration> {
    Ok(pbjson_types::Duration {
        seconds: i64::try_from(duration.as_secs()).context("--ttl is too long")?,
        nanos: i32::try_from(duration.subsec_nanos())
            .expect("sub-second nanoseconds are below 10^9 and fit in an i32"),
    })
}

/// Prints a spec (or its whole record) as JSON: pretty in table mode, one line in JSON mode.
pub(super) async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let mut admin = args.client.connect().await?;
    let record = admin
        .get_spec(GetSpecRequest {
            id: args.id.clone(),
        })
        .await
        .map_err(|status| status_error(&format!("get {:?}", args.id), &status))?
        .into_inner();
    let pretty = args.client.output() == OutputFormat::Table;
    let mut out = std::io::stdout().lock();
    if args.record {
        write_json(&mut out, &record, pretty)?;
    } else {
        write_json(&mut out, &record.spec.unwrap_or_default(), pretty)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Lists records, following page tokens: a table, or one JSON record per line as pages arrive.
pub(super) async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut admin = args.client.connect().await?;
    let format = args.client.output();
    let labels = labels_from(&args.filter.labels)?;
    let mut remaining = args.limit.unwrap_or(usize::MAX);
    let mut page_token = String::new();
    let mut table_rows = Vec::new();
    let mut out = std::io::stdout().lock();
    while remaining > 0 {
        // Asking for more than the server hands out gets as many as it does.
        let page_size = i32::try_from(remaining.min(MAX_PAGE_SIZE as usize))
            .expect("a page size of at most MAX_PAGE_SIZE fits in an i32");
        let page = admin
            .list_specs(ListSpecsRequest {
                page_size,
                page_token: std::mem::take(&mut page_token),
                id_prefix: args.filter.prefix.clone().unwrap_or_default(),
                labels: labels.clone(),
                view: if args.full {
                    SpecView::Full
                } else {
                    SpecView::Basic
                }
                .into(),
            })
            .await
            .map_err(|status| status_error("list", &status))?
            .into_inner();
        for record in page.specs.into_iter().take(remaining) {
            remaining -= 1;
            match format {
                OutputFormat::Json => write_json(&mut out, &record, false)?,
                OutputFormat::Table => table_rows.push(record),
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if format == OutputFormat::Table {
        writeln!(out, "{}", records_table(&table_rows, args.full))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Deletes a record; with `--allow-missing` an absent id is not an error.
pub(super) async fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let mut admin = args.client.connect().await?;
    let response = admin
        .delete_spec(DeleteSpecRequest {
            id: args.id.clone(),
            expected_generation: args.expected_generation,
            allow_missing: args.allow_missing,
        })
        .await
        .map_err(|status| status_error(&format!("delete {:?}", args.id), &status))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    match args.client.output() {
        OutputFormat::Json => write_json(
            &mut out,
            &serde_json::json!({ "id": args.id, "deleted": response.deleted }),
            false,
        )?,
        OutputFormat::Table if response.deleted => writeln!(out, "deleted {:?}", args.id)?,
        OutputFormat::Table => writeln!(out, "{:?} was not stored; nothing deleted", args.id)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_key_equals_value_and_a_repeated_key_is_refused() {
        assert_eq!(
            parse_label("team=blue=green").unwrap(),
            ("team".to_owned(), "blue=green".to_owned())
        );
        assert!(parse_label("team").is_err());
        let pairs = [
            ("team".to_owned(), "a".to_owned()),
            ("team".to_owned(), "b".to_owned()),
        ];
        assert!(labels_from(&pairs).is_err());
    }
}
