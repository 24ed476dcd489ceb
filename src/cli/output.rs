//! What the client subcommands print: tables for people, JSON for programs.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use chrono::{DateTime, SecondsFormat};
use comfy_table::{Table, presets};
use pbjson_types::Timestamp;
use serde::Serialize;

use crate::proto::specprovider::v1::SpecRecord;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum OutputFormat {
    /// Aligned columns for reading.
    Table,
    /// JSON (the protobuf JSON mapping for specs and records); one value per line.
    Json,
}

impl OutputFormat {
    /// `choice`, or the default: a table for a person at a terminal, JSON for a pipe or file.
    pub fn resolve(choice: Option<Self>) -> Self {
        choice.unwrap_or(if std::io::stdout().is_terminal() {
            Self::Table
        } else {
            Self::Json
        })
    }
}

/// A record's metadata as a two-column table (the spec is left out: `get` prints it).
pub(super) fn record_table(record: &SpecRecord) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.add_row(vec!["id", record.id.as_str()]);
    table.add_row(vec!["generation".to_owned(), record.generation.to_string()]);
    table.add_row(vec!["spec digest", record.spec_digest.as_str()]);
    table.add_row(vec!["labels".to_owned(), labels_text(&record.labels)]);
    table.add_row(vec![
        "created".to_owned(),
        time_text(record.create_time.as_ref()),
    ]);
    table.add_row(vec!["created by", record.created_by.as_str()]);
    table.add_row(vec![
        "updated".to_owned(),
        time_text(record.update_time.as_ref()),
    ]);
    table.add_row(vec!["updated by", record.updated_by.as_str()]);
    table.add_row(vec![
        "expires".to_owned(),
        expiry_text(record.expire_time.as_ref()),
    ]);
    table
}

/// Records as rows: id, generation, labels, update time, who updated, expiry, spec digest; with
/// `with_base_ref`, the spec's base image too.
pub(super) fn records_table(records: &[SpecRecord], with_base_ref: bool) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    let mut header = vec![
        "ID",
        "GENERATION",
        "LABELS",
        "UPDATED",
        "UPDATED BY",
        "EXPIRES",
        "SPEC DIGEST",
    ];
    if with_base_ref {
        header.push("BASE REF");
    }
    table.set_header(header);
    for record in records {
        let mut row = vec![
            record.id.clone(),
            record.generation.to_string(),
            labels_text(&record.labels),
            time_text(record.update_time.as_ref()),
            record.updated_by.clone(),
            expiry_text(record.expire_time.as_ref()),
            record.spec_digest.clone(),
        ];
        if with_base_ref {
            row.push(
                record
                    .spec
                    .as_ref()
                    .map(|spec| spec.base_ref.clone())
                    .unwrap_or_default(),
            );
        }
        table.add_row(row);
    }
    table
}

/// Labels as `k=v` pairs sorted by key, comma-separated.
fn labels_text(labels: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

/// A timestamp in RFC 3339 (UTC, whole seconds: enough to read, and it keeps columns narrow).
fn time_text(time: Option<&Timestamp>) -> String {
    time.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// An expiry time, or `never` when the record has none.
fn expiry_text(time: Option<&Timestamp>) -> String {
    match time {
        Some(_) => time_text(time),
        None => "never".to_owned(),
    }
}

/// Writes `value` as JSON to `out`: pretty for a person, one line otherwise.
pub(super) fn write_json(
    out: &mut impl Write,
    value: &impl Serialize,
    pretty: bool,
) -> anyhow::Result<()> {
    if pretty {
        serde_json::to_writer_pretty(&mut *out, value)?;
    } else {
        serde_json::to_writer(&mut *out, value)?;
    }
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_seconds_and_a_missing_expiry_as_never() {
        let t = Timestamp {
            seconds: 1_767_225_600,
            nanos: 500,
        };
        assert_eq!(time_text(Some(&t)), "2026-01-01T00:00:00Z");
        assert_eq!(expiry_text(None), "never");
    }

    #[test]
    fn labels_are_sorted_by_key() {
        let labels = HashMap::from([
            ("team".to_owned(), "blue".to_owned()),
            ("owner".to_owned(), "ann".to_owned()),
        ]);
        assert_eq!(labels_text(&labels), "owner=ann,team=blue");
    }
}
