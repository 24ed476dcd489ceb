//! Checking a remote content layer's URL: it answers 2xx to HEAD (or, where HEAD is refused, to
//! a 1-byte ranged GET) with the layer's size; optionally the downloaded bytes match `digest`,
//! and for gzip layers their uncompressed bytes match `diff_id`.

use std::io::Write;

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use url::Url;

use crate::domain::validate::MEDIA_TYPES_GZIP;
use crate::proto::registryfacade::RemoteContentLayer;

use super::http::{SafeClient, SendError, host_label, next_chunk, timed_out};

/// How content layers are checked.
pub(super) struct LayerChecker {
    pub(super) http: SafeClient,
    /// Download and hash layers up to this size; `None`: check sizes only.
    pub(super) download_limit: Option<u64>,
}

impl LayerChecker {
    /// Checks `layer`, or says in one sentence what is wrong.
    pub(super) async fn check(
        &self,
        layer: &RemoteContentLayer,
        deadline: Instant,
    ) -> Result<(), String> {
        let url = Url::parse(&layer.url).map_err(|err| format!("not a URL: {err}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "only http and https URLs are checked, not {}:",
                url.scheme()
            ));
        }
        let host = host_label(&url);
        let length = self.length(&url, &host, deadline).await?;
        let size = u64::try_from(layer.size).unwrap_or_default();
        if length != size {
            return Err(format!("Content-Length {length} differs from size {size}"));
        }
        match self.download_limit {
            Some(limit) if size <= limit => {
                self.check_digests(&url, &host, layer, size, deadline).await
            }
            _ => Ok(()),
        }
    }

    /// The blob's length, from HEAD or, where HEAD is refused, a 1-byte ranged GET. Servers that
    /// sign URLs per method (S3, GCS) answer 403 to a HEAD of a URL signed for GET.
    async fn length(&self, url: &Url, host: &str, deadline: Instant) -> Result<u64, String> {
        let head = self.send(Method::HEAD, url, host, deadline, false).await?;
        let status = head.status();
        if status.is_success() {
            return content_length(&head, host);
        }
        if !matches!(
            status,
            StatusCode::FORBIDDEN | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
        ) {
            return Err(format!("{host} answers {status} to HEAD"));
        }
        let get = self.send(Method::GET, url, host, deadline, true).await?;
        match get.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = get
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                range
                    .rsplit_once('/')
                    .and_then(|(_, total)| total.trim().parse().ok())
                    .ok_or_else(|| {
                        format!(
                            "{host} answers a ranged GET without the total length in Content-Range"
                        )
                    })
            }
            // The server ignored the range: the full length is in the header, and the body is
            // dropped unread.
            status if status.is_success() => content_length(&get, host),
            status => Err(format!(
                "{host} answers {} to HEAD and {status} to a ranged GET",
                head.status()
            )),
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &Url,
        host: &str,
        deadline: Instant,
        first_byte: bool,
    ) -> Result<Response, String> {
        let mut request = self.http.request(method, url.clone());
        if first_byte {
            request = request.header(RANGE, "bytes=0-0");
        }
        self.http
            .send(url, request, deadline)
            .await
            .map_err(|err| self.http.explain(host, err))
    }

    /// Downloads the blob, of `size` bytes, hashing it (and, for gzip, its uncompressed bytes) as
    /// it comes.
    async fn check_digests(
        &self,
        url: &Url,
        host: &str,
        layer: &RemoteContentLayer,
        size: u64,
        deadline: Instant,
    ) -> Result<(), String> {
        let mut response = self.send(Method::GET, url, host, deadline, false).await?;
        if !response.status().is_success() {
            return Err(format!("{host} answers {} to GET", response.status()));
        }
        let gzip = MEDIA_TYPES_GZIP.contains(&layer.media_type.as_str());
        let mut compressed = Sha256::new();
        // Sha256 is an `io::Write`: the gunzipped bytes are hashed as they are written.
        let mut gunzip = gzip.then(|| flate2::write::GzDecoder::new(Sha256::new()));
        let mut read = 0u64;
        loop {
            let chunk = match next_chunk(&mut response, deadline).await {
                Err(SendError::Timeout) => return Err(timed_out(host, self.http.timeout())),
                Err(_) => return Err(format!("downloading the layer from {host} failed")),
                Ok(None) => break,
                Ok(Some(chunk)) => chunk,
            };
            read += chunk.len() as u64;
            if read > size {
                return Err(format!("{host} sent more than size ({size} bytes)"));
            }
            compressed.update(&chunk);
            if let Some(gunzip) = &mut gunzip {
                gunzip
                    .write_all(&chunk)
                    .map_err(|err| format!("the layer is not valid gzip: {err}"))?;
            }
        }
        let digest = format!("sha256:{}", hex::encode(compressed.finalize()));
        if digest != layer.digest {
            return Err(format!(
                "digest {} differs from the sha256 of the downloaded layer, {digest}",
                layer.digest
            ));
        }
        if let Some(gunzip) = gunzip {
            let hasher = gunzip
                .finish()
                .map_err(|err| format!("the layer is not valid gzip: {err}"))?;
            let diff_id = format!("sha256:{}", hex::encode(hasher.finalize()));
            if diff_id != layer.diff_id {
                return Err(format!(
                    "diff_id {} differs from the sha256 of the uncompressed layer, {diff_id}",
                    layer.diff_id
                ));
            }
        }
        Ok(())
    }
}

fn content_length(response: &Response, host: &str) -> Result<u64, String> {
    response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{host} answers without a Content-Length"))
}
