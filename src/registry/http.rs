//! The HTTP client of verification: every request it sends is checked against
//! `verify.blocked_networks` before connecting (a literal address), after DNS resolution (the
//! resolver refuses a name with any blocked address) and after every redirect (at most
//! [`MAX_REDIRECTS`], http and https only); bodies are read up to a bound; each request is
//! counted by host and status, and cut off at the verification's deadline.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{RequestBuilder, Response};
use tokio::time::Instant;
use url::{Host, Url};

use super::metrics::VerifyMetrics;

/// Most redirects followed for one request.
pub(super) const MAX_REDIRECTS: usize = 5;

/// Longest time to establish one connection (a part of the verification's own deadline).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The networks no request may reach.
#[derive(Debug, Clone)]
pub(super) struct Blocklist(Arc<Vec<IpNet>>);

impl Blocklist {
    pub(super) fn new(networks: &[IpNet]) -> Self {
        Self(Arc::new(networks.to_vec()))
    }

    /// The refusal for `ip`, if it lies in a blocked network; `host` is what the caller named.
    fn check(&self, host: &str, ip: IpAddr) -> Result<(), Blocked> {
        // An IPv4 address mapped into IPv6 (::ffff:169.254.169.254) reaches the IPv4 one.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        match self.0.iter().find(|net| net.contains(&ip)) {
            Some(net) => Err(Blocked {
                host: host.to_owned(),
                ip,
                network: *net,
            }),
            None => Ok(()),
        }
    }

    /// Checks a URL's host if it is a literal address (names are checked by the resolver).
    fn check_url(&self, url: &Url) -> Result<(), Blocked> {
        match url.host() {
            Some(Host::Ipv4(ip)) => self.check(&ip.to_string(), IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check(&ip.to_string(), IpAddr::V6(ip)),
            _ => Ok(()),
        }
    }
}

/// A request refused because its destination lies in `verify.blocked_networks`.
#[derive(Debug)]
struct Blocked {
    host: String,
    ip: IpAddr,
    network: IpNet,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host == self.ip.to_string() {
            write!(
                f,
                "refused to connect to {}: it lies in {}, one of verify.blocked_networks",
                self.ip, self.network
            )
        } else {
            write!(
                f,
                "refused to connect to {}: it resolves to {}, in {}, one of \
                 verify.blocked_networks",
                self.host, self.ip, self.network
            )
        }
    }
}

impl StdError for Blocked {}

/// A redirect that is not followed.
#[derive(Debug)]
enum RedirectRefused {
    TooMany,
    Scheme(String),
}

impl fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooMany => write!(f, "more than {MAX_REDIRECTS} redirects"),
            Self::Scheme(scheme) => {
                write!(
                    f,
                    "redirect to a {scheme}: URL (only http and https are followed)"
                )
            }
        }
    }
}

impl StdError for RedirectRefused {}

/// The DNS resolver that refuses names resolving into a blocked network.
struct GuardedResolver(Blocklist);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let blocklist = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                blocklist.check(&host, addr.ip())?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Why a request got no answer (or no whole body); the message never holds the URL (its query
/// may be a presigned credential) nor a header.
#[derive(Debug)]
pub(super) enum SendError {
    /// The deadline passed first.
    Timeout,
    /// The body is longer than the bound it was read with, in bytes.
    TooLarge(usize),
    /// Anything else, as one sentence.
    Failed(String),
}

/// The guarded client and what it counts into.
#[derive(Clone)]
pub(super) struct SafeClient {
    client: reqwest::Client,
    blocklist: Blocklist,
    metrics: VerifyMetrics,
    timeout: Duration,
}

impl SafeClient {
    /// `timeout` is `verify.timeout`, for the messages of requests it cuts off.
    pub(super) fn new(
        blocklist: Blocklist,
        metrics: VerifyMetrics,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let redirect_blocklist = blocklist.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(RedirectRefused::TooMany);
            }
            let scheme = attempt.url().scheme().to_owned();
            if scheme != "http" && scheme != "https" {
                return attempt.error(RedirectRefused::Scheme(scheme));
            }
            if let Err(blocked) = redirect_blocklist.check_url(attempt.url()) {
                return attempt.error(blocked);
            }
            attempt.follow()
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("spec-provider/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver(blocklist.clone())))
            .redirect(policy)
            // A proxy would resolve names itself, out of reach of the blocklist.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self {
            client,
            blocklist,
            metrics,
            timeout,
        })
    }

    /// One sentence for a request to `host` that got no answer.
    pub(super) fn explain(&self, host: &str, err: SendError) -> String {
        match err {
            SendError::Timeout => timed_out(host, self.timeout),
            SendError::TooLarge(limit) => {
                format!("{host} answered with more than {limit} bytes, the most read")
            }
            SendError::Failed(reason) => reason,
        }
    }

    /// `verify.timeout`.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A GET or HEAD to build on.
    pub(super) fn request(&self, method: reqwest::Method, url: Url) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends `request` to `url` (whose host labels the metrics), answering by `deadline`.
    pub(super) async fn send(
        &self,
        url: &Url,
        request: RequestBuilder,
        deadline: Instant,
    ) -> Result<Response, SendError> {
        let host = host_label(url);
        let started = Instant::now();
        if let Err(blocked) = self.blocklist.check_url(url) {
            self.metrics.request(&host, "blocked", started.elapsed());
            return Err(SendError::Failed(blocked.to_string()));
        }
        let outcome = tokio::time::timeout_at(deadline, request.send()).await;
        let (code, result) = match outcome {
            Err(_) => ("timeout".to_owned(), Err(SendError::Timeout)),
            Ok(Ok(response)) => (response.status().as_str().to_owned(), Ok(response)),
            Ok(Err(err)) => {
                let code = if find_source::<Blocked>(&err).is_some() {
                    "blocked"
                } else {
                    "error"
                };
                (
                    code.to_owned(),
                    Err(SendError::Failed(describe(&host, err))),
                )
            }
        };
        self.metrics.request(&host, &code, started.elapsed());
        result
    }
}

/// Reads a body of at most `limit` bytes by `deadline`.
pub(super) async fn read_bounded(
    mut response: Response,
    limit: usize,
    deadline: Instant,
) -> Result<Bytes, SendError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(SendError::TooLarge(limit));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = next_chunk(&mut response, deadline).await? {
        if body.len() + chunk.len() > limit {
            return Err(SendError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The next chunk of `response`'s body, `None` at its end; `Timeout` once `deadline` passes.
pub(super) async fn next_chunk(
    response: &mut Response,
    deadline: Instant,
) -> Result<Option<Bytes>, SendError> {
    match tokio::time::timeout_at(deadline, response.chunk()).await {
        Err(_) => Err(SendError::Timeout),
        Ok(Err(err)) => Err(SendError::Failed(format!(
            "reading the answer failed: {}",
            root_cause(&err.without_url())
        ))),
        Ok(Ok(chunk)) => Ok(chunk),
    }
}

/// The failure of a check whose server had not answered when `verify.timeout` ran out.
pub(super) fn timed_out(host: &str, timeout: Duration) -> String {
    format!(
        "{host} did not answer within {} (verify.timeout)",
        humantime::format_duration(timeout)
    )
}

/// `host` or `host:port` of a URL: the metrics label and how errors name a server.
pub(super) fn host_label(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => "unknown".to_owned(),
    }
}

/// One sentence for a failed request, without its URL: reqwest's own text names it, query and
/// all (a presigned credential), when it is the innermost error.
fn describe(host: &str, err: reqwest::Error) -> String {
    let err = err.without_url();
    if let Some(blocked) = find_source::<Blocked>(&err) {
        return blocked.to_string();
    }
    if let Some(refused) = find_source::<RedirectRefused>(&err) {
        return format!("{host} answered with a redirect that was not followed: {refused}");
    }
    if err.is_connect() {
        return format!("cannot connect to {host}: {}", root_cause(&err));
    }
    format!("request to {host} failed: {}", root_cause(&err))
}

/// The innermost error of a chain: hyper and reqwest wrap the useful one several times.
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

fn find_source<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocklist() -> Blocklist {
        Blocklist::new(&[
            "169.254.0.0/16".parse().unwrap(),
            "fe80::/10".parse().unwrap(),
        ])
    }

    #[test]
    fn mapped_ipv4_addresses_are_blocked_like_the_ipv4_ones() {
        let list = blocklist();
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:169.254.169.254]/",
            "http://[fe80::1]:8080/",
        ] {
            let err = list.check_url(&Url::parse(url).unwrap()).unwrap_err();
            assert!(err.to_string().contains("verify.blocked_networks"), "{err}");
        }
        list.check_url(&Url::parse("http://127.0.0.1:5000/").unwrap())
            .unwrap();
    }

    #[tokio::test]
    async fn a_failed_request_is_described_without_its_url() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Bind and drop a listener to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/layer?X-Amz-Signature=secret-sig");
        let err = reqwest::Client::new().get(&url).send().await.unwrap_err();
        assert!(
            err.to_string().contains("secret-sig"),
            "reqwest names the URL"
        );

        let text = describe(&format!("127.0.0.1:{port}"), err);

        assert!(text.starts_with("cannot connect to 127.0.0.1:"), "{text}");
        assert!(!text.contains("secret-sig"), "{text}");
    }
}
