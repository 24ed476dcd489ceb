//! Talking to a running server: the flags every client subcommand shares (TLS and the bearer
//! token included), connecting, and turning a failed RPC into one readable sentence.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tonic::Status;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_types::StatusExt;

use crate::config::Secret;
use crate::proto::specprovider::v1::spec_admin_client::SpecAdminClient;

use super::output::OutputFormat;

/// Where the client subcommands look for a server unless told otherwise.
pub(super) const DEFAULT_ADDR: &str = "http://127.0.0.1:8080";

/// A SpecAdmin client that sends the bearer token, if any, with every call.
pub(super) type AdminClient = SpecAdminClient<InterceptedService<Channel, BearerToken>>;

/// How to reach a server securely: TLS files, the name its certificate must carry, the token.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct SecurityArgs {
    /// CA certificate (PEM) that the server's certificate must chain to; needs an https:// --addr.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not --addr's host (registry
    /// facades use ws-manager).
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Bearer token sent as `authorization: Bearer <token>`.
    #[arg(long, env = "SPEC_PROVIDER_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub token: Option<Secret>,
}

/// The shortest per-call timeout of calls that may verify against registries.
pub(super) const VERIFYING_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags shared by the subcommands that talk to a server.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct ClientArgs {
    /// The server, as an http:// URL (https:// with TLS).
    #[arg(long, env = "SPEC_PROVIDER_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// Give up on connecting, and on each call, after this long (e.g. 500ms, 10s).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Output format [default: table on a terminal, json otherwise].
    #[arg(long, value_enum)]
    pub output: Option<OutputFormat>,
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl ClientArgs {
    /// The output format asked for, or the default for where stdout goes.
    pub fn output(&self) -> OutputFormat {
        OutputFormat::resolve(self.output)
    }

    /// Connects to `--addr`, saying plainly when the address is malformed or nothing answers.
    pub async fn connect(&self) -> anyhow::Result<AdminClient> {
        self.connect_with_call_timeout(self.timeout).await
    }

    /// [`Self::connect`] for calls that may verify against registries (`verify`, and every put:
    /// the server's `verify.required` makes any put verify), which take up to the server's
    /// `verify.timeout` (10s by default): each call may take at least
    /// [`VERIFYING_CALL_TIMEOUT`], so that `--timeout`'s default does not cut off the report.
    /// Connecting still gives up after `--timeout`.
    pub async fn connect_verifying(&self) -> anyhow::Result<AdminClient> {
        self.connect_with_call_timeout(self.timeout.max(VERIFYING_CALL_TIMEOUT))
            .await
    }

    async fn connect_with_call_timeout(&self, call: Duration) -> anyhow::Result<AdminClient> {
        let channel = connect_channel(&self.addr, self.timeout, call, &self.security).await?;
        Ok(
            SpecAdminClient::with_interceptor(channel, self.security.bearer_token()?)
                // The server bounds what it sends (specs are at most 16 MiB, pages bounded), and a
                // listing with specs may well exceed tonic's 4 MiB default.
                .max_decoding_message_size(usize::MAX),
        )
    }
}

impl SecurityArgs {
    /// The interceptor that sends `--token`.
    pub fn bearer_token(&self) -> anyhow::Result<BearerToken> {
        let value = self
            .token
            .as_ref()
            .map(|token| {
                MetadataValue::try_from(format!("Bearer {}", token.expose())).map_err(|_| {
                    anyhow!("--token (or SPEC_PROVIDER_TOKEN) holds characters a token cannot have")
                })
            })
            .transpose()?;
        Ok(BearerToken(value))
    }

    /// The TLS configuration the flags ask for, or `None` for plaintext.
    fn tls_config(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        let read = |path: &Path, flag: &str| {
            std::fs::read(path).with_context(|| format!("{flag}: reading {}", path.display()))
        };
        let Some(ca) = &self.ca else {
            if self.cert.is_some() || self.server_name.is_some() {
                bail!(
                    "--cert, --key and --server-name need --ca (the CA of the server's certificate)"
                );
            }
            return Ok(None);
        };
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "--ca")?));
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config = config.identity(Identity::from_pem(
                read(cert, "--cert")?,
                read(key, "--key")?,
            ));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(Some(config))
    }
}

/// Sends `authorization: Bearer <token>` with every call, when there is a token.
#[derive(Clone)]
pub(super) struct BearerToken(Option<AsciiMetadataValue>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

fn parse_secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(value))
}

/// A channel to `addr`, over TLS when the flags ask for it, saying plainly when the address is
/// malformed or nothing answers within `timeout`; each call on it may take `call`.
pub(super) async fn connect_channel(
    addr: &str,
    timeout: Duration,
    call: Duration,
    security: &SecurityArgs,
) -> anyhow::Result<Channel> {
    let tls = security.tls_config()?;
    check_addr(addr, tls.is_some())?;
    let mut endpoint = Endpoint::from_shared(addr.to_owned())
        .with_context(|| format!("--addr {addr:?} is not a valid server address"))?
        .connect_timeout(timeout)
        .timeout(call);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .context("setting up TLS from --ca, --cert and --key")?;
    }
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
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
            humantime::format_duration(timeout)
        ),
    }
}

/// Refuses an address tonic would only fail on later with a vaguer message.
fn check_addr(addr: &str, tls: bool) -> anyhow::Result<()> {
    let url = url::Url::parse(addr).map_err(|err| {
        anyhow!(
            "--addr {addr:?} is not a valid server address ({err}); write it like {DEFAULT_ADDR}"
        )
    })?;
    match (url.scheme(), tls) {
        ("http", false) | ("https", true) => {}
        ("https", false) => bail!(
            "--addr {addr:?} starts with https://: give --ca (the CA of the server's certificate) \
             too, or use http:// for a plaintext server"
        ),
        ("http", true) => bail!(
            "--addr {addr:?} starts with http:// but --ca asks for TLS; write it like \
             https://spec-provider:8080"
        ),
        _ => bail!(
            "--addr {addr:?} must start with http:// (or https:// with --ca); write it like \
             {DEFAULT_ADDR}"
        ),
    }
    if url.host().is_none() {
        bail!("--addr {addr:?} names no host; write it like {DEFAULT_ADDR}");
    }
    Ok(())
}

/// One sentence for a failed call: what was attempted, the gRPC code, and every field violation
/// (or failed precondition, for a put refused by verification) the server listed, or its message
/// when it listed none.
pub(super) fn describe_status(action: &str, status: &Status) -> String {
    let code = status.code();
    let mut violations: Vec<String> = status
        .get_details_bad_request()
        .map(|bad_request| {
            bad_request
                .field_violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect()
        })
        .unwrap_or_default();
    if let Some(failure) = status.get_details_precondition_failure() {
        violations.extend(
            failure
                .violations
                .iter()
                .map(|v| format!("{}: {}", v.subject, v.description)),
        );
    }
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
    fn a_refused_verification_lists_every_failed_check_with_the_code() {
        let mut details = ErrorDetails::new();
        details.add_precondition_failure_violation(
            "VERIFICATION",
            "spec.base_ref",
            "manifest unknown: tag \"v9\" not found in r.example.com/base",
        );
        let status =
            Status::with_error_details(Code::FailedPrecondition, "verification failed", details);
        assert_eq!(
            describe_status("put \"ws-1\"", &status),
            "put \"ws-1\" was rejected with FailedPrecondition: spec.base_ref: manifest unknown: \
             tag \"v9\" not found in r.example.com/base"
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
        let err = check_addr("127.0.0.1:8080", false).unwrap_err().to_string();
        assert!(err.contains("http://"), "{err}");
        let err = check_addr("https://example.com", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("give --ca"), "{err}");
        let err = check_addr("http://example.com", true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("https://"), "{err}");
        assert!(check_addr("http://localhost:8080", false).is_ok());
        assert!(check_addr("https://localhost:8080", true).is_ok());
    }
}
