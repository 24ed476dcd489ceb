//! Layer URLs: where a registry facade fetches a remote layer's blob.

use ::url::Url;

use super::{MAX_QUOTED_CHARS, quote};

/// Checks the URL of a remote layer: absolute, `https` (or `http` if allowed), with a host.
///
/// The URL is never quoted back: signed URLs carry credentials in their query.
pub(super) fn check_layer_url(raw: &str, allow_http: bool) -> Result<(), String> {
    if raw.is_empty() {
        return Err("is required".into());
    }
    // WHATWG parsing (the url crate) silently repairs what other parsers, like the registry
    // facade's, refuse or read differently: surrounding spaces, tabs and newlines anywhere,
    // backslashes for slashes, a missing "//". Such URLs are refused rather than stored as sent
    // and read differently by the facade.
    if raw
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'\\')
    {
        return Err("must not contain whitespace, control characters or backslashes".into());
    }
    let url = Url::parse(raw).map_err(|e| format!("is not a valid absolute URL: {e}"))?;
    let schemes = if allow_http { "https or http" } else { "https" };
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(
                "must use https; plain http is only accepted with the setting \
                 validation.allow_http_urls"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "must use {schemes}, not {}",
                quote(other, MAX_QUOTED_CHARS)
            ));
        }
    }
    if !raw
        .get(url.scheme().len()..)
        .is_some_and(|rest| rest.starts_with("://"))
    {
        return Err(format!("must have the form {}://host/path", url.scheme()));
    }
    if url.host().is_none() {
        return Err("must have a host".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Caller;
    use crate::domain::validate::fixtures::{
        remote_layer, request_with_spec, rules, the_only_violation, valid_request,
    };
    use crate::domain::validate::{ValidationRules, validate_put};

    #[test]
    fn https_urls_with_a_host_are_accepted() {
        for url in [
            "https://blobs.example.com/layer.tar",
            "https://blobs.example.com:8443/a/b?X-Amz-Signature=0a1b&x=1",
            "HTTPS://blobs.example.com/layer.tar",
            "https://10.0.0.1/layer",
            "https://[::1]/layer",
        ] {
            assert_eq!(check_layer_url(url, false), Ok(()), "{url}");
        }
    }

    #[test]
    fn urls_must_be_absolute_https_with_a_host() {
        for url in [
            "",
            "/relative/path",
            "blobs.example.com/layer",
            "ftp://blobs.example.com/layer",
            "file:///etc/passwd",
            "data:text/plain,hello",
            "https://",
            "https:blobs.example.com/layer",
            "https:/blobs.example.com/layer",
            "https:\\\\blobs.example.com\\layer",
            " https://blobs.example.com/layer",
            "https://blobs.example.com/layer\n",
            "https://blobs.example.com/a b",
            "https://blobs.\texample.com/layer",
            "https://blobs.example.com:99999/layer",
        ] {
            assert!(check_layer_url(url, true).is_err(), "{url:?} was accepted");
        }
    }

    #[test]
    fn http_urls_are_accepted_only_when_the_setting_allows_them() {
        let http = || {
            request_with_spec(|spec| {
                remote_layer(spec, 1).url = "http://blobs.example.com/layer".into();
            })
        };
        let violation = the_only_violation(http());
        assert_eq!(violation.field, "spec.content_layer[1].remote.url");
        assert!(
            violation.description.contains("allow_http_urls"),
            "{violation}"
        );

        let relaxed = ValidationRules {
            allow_http_urls: true,
            ..rules()
        };
        assert!(validate_put(http(), &relaxed, Caller::anonymous()).is_ok());
        assert!(validate_put(valid_request(), &relaxed, Caller::anonymous()).is_ok());
    }

    #[test]
    fn url_violations_never_quote_the_url() {
        for url in [
            "ftp://user:SECRET@blobs.example.com/x",
            "https://blobs.example.com/x?sig=SECRET and more",
            "relative?sig=SECRET",
        ] {
            let problem = check_layer_url(url, false).unwrap_err();
            assert!(!problem.contains("SECRET"), "{problem}");
        }
    }
}
