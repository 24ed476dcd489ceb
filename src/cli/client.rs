//! Talking to a running server: the flags every client subcommand shares, connecting, and turning
//! a failed RPC into one readable sentence.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tonic::Status;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

use crate::proto::specprovider::v1::spec_admin_client::SpecAdminClient;

use super::output::OutputFormat;

/// Where the client subcommands look for a server unless told otherwise.
pub(super) const DEFAULT_ADDR: &str = "http://127.0.0.1:8080";

/// Flags shared by the subcommands that talk to a server.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct ClientArgs {
    /// The server, as an http:// URL.
    #[arg(long, env = "SPEC_PROVIDER_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// Give up on connecting, and on each call, after this long (e.g. 500ms, 10s).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Output format [default: table on a terminal, json otherwise].
    #[arg(long, value_enum)]
    pub output: Option<OutputFormat>,
}

impl ClientArgs {
    /// The output format asked for, or the default for where stdout goes.
    pub fn output(&self) -> OutputFormat {
        OutputFormat::resolve(self.output)
    }

    /// Connects to `--addr`, saying plainly when the address is malformed or nothing answers.
    pub async fn connect(&self) -> anyhow::Result<SpecAdminClient<Channel>> {
        let addr = &self.addr;
        check_addr(addr)?;
        let endpoint = Endpoint::from_shared(addr.clone())
            .with_context(|| format!("--addr {addr:?} is not a valid server address"))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        let channel = match tokio::time::timeout(self.timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(err)) => {
                // The alternate form lists the causes, where tonic keeps the useful part
                // ("Connection refused").
                let cause = anyhow::Error::new(err);
                bail!(
                    "cannot reach spec-provider at {addr} ({cause:#}); is the server running, and \
                     is --addr (or SPEC_PROVIDER_ADDR) right?"
                )
            }
            Err(_) => bail!(
                "cannot reach spec-provider at {addr}: no connection within {}; is the server \
                 running, and is --addr (or SPEC_PROVIDER_ADDR) right?",
                humantime::format_duration(self.timeout)
            ),
        };
        Ok(SpecAdminClient::new(channel)
            // The server bounds what it sends (specs are at most 16 MiB, pages bounded), and a
            // listing with specs may well exceed tonic's 4 MiB default.
            .max_decoding_message_size(usize::MAX))
    }
}

/// Refuses an address tonic would only fail on later with a vaguer message.
fn check_addr(addr: &str) -> anyhow::Result<()> {
    let url = url::Url::parse(addr).map_err(|err| {
        anyhow!(
            "--addr {addr:?} is not a valid server address ({err}); write it like {DEFAULT_ADDR}"
        )
    })?;
    if url.scheme() != "http" {
        bail!(
            "--addr {addr:?} must start with http:// (spec-provider serves plaintext gRPC); write \
             it like {DEFAULT_ADDR}"
        );
    }
    if url.host().is_none() {
        bail!("--addr {addr:?} names no host; write it like {DEFAULT_ADDR}");
    }
    Ok(())
}

/// One sentence for a failed call: what was attempted, the gRPC code, and every field violation
/// the server listed (or its message when it listed none).
pub(super) fn describe_status(action: &str, status: &Status) -> String {
    let code = status.code();
    let violations: Vec<String> = status
        .get_details_bad_request()
        .map(|bad_request| {
            bad_request
                .field_violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect()
        })
        .unwrap_or_default();
    if violations.is_empty() {
        format!("{action} failed with {code:?}: {}", status.message())
    } else {
        format!(
            "{action} was rejected with {code:?}: {}",
            violations.join("; ")
        )
    }
}

/// [`describe_status`] as an error.
pub(super) fn status_error(action: &str, status: &Status) -> anyhow::Error {
    anyhow!(describe_status(action, status))
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn a_rejection_lists_every_field_violation_with_the_code() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("spec.base_ref", "is required");
        details.add_bad_request_violation("spec.content_layer[0].remote.size", "must be positive");
        let status = Status::with_error_details(Code::InvalidArgument, "invalid", details);
        assert_eq!(
            describe_status("put \"ws-1\"", &status),
            "put \"ws-1\" was rejected with InvalidArgument: spec.base_ref: is required; \
             spec.content_layer[0].remote.size: must be positive"
        );
    }

    #[test]
    fn a_failure_without_details_gives_the_server_message() {
        let status = Status::not_found("no spec with id \"x\"");
        assert_eq!(
            describe_status("get \"x\"", &status),
            "get \"x\" failed with NotFound: no spec with id \"x\""
        );
    }

    #[test]
    fn addresses_without_a_scheme_or_with_https_are_refused_plainly() {
        let err = check_addr("127.0.0.1:8080").unwrap_err().to_string();
        assert!(err.contains("http://"), "{err}");
        let err = check_addr("https://example.com").unwrap_err().to_string();
        assert!(err.contains("must start with http://"), "{err}");
        assert!(check_addr("http://localhost:8080").is_ok());
    }
}
