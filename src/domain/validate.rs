//! Validation of requests: every violation is reported at once, each with its field path.
//!
//! A spec is stored and served byte for byte as validation leaves it, and registry facades cache
//! what they are served for the whole life of an id. So whatever a facade (or the container
//! runtime behind it) would choke on is refused here, at write time, with a sentence naming the
//! field, instead of surfacing later as a failed image pull.

use std::io::{self, Cursor};
use std::str::FromStr;

use chrono::TimeDelta;
use oci_spec::distribution::Reference;
use prost::Message;
use url::Url;

use crate::proto::registryfacade::content_layer::Spec as LayerSpec;
use crate::proto::registryfacade::{DirectContentLayer, ImageSpec, RemoteContentLayer};
use crate::proto::specprovider::v1::PutSpecRequest;

use super::{Error, FieldViolation, Labels, PutCommand, SpecId, ValidatedSpec};

/// The most labels a record may carry.
pub const MAX_LABELS: usize = 64;

/// The shortest accepted `ttl`, in seconds.
pub const MIN_TTL_SECONDS: i64 = 1;

/// The longest accepted `ttl`, in seconds: 365 days.
pub const MAX_TTL_SECONDS: i64 = 365 * 24 * 60 * 60;

/// The media type of an uncompressed OCI layer, whose diff_id is its digest.
const MEDIA_TYPE_UNCOMPRESSED: &str = "application/vnd.oci.image.layer.v1.tar";

/// Media types of compressed layers: only the writer knows their diff_id.
const MEDIA_TYPES_COMPRESSED: [&str; 3] = [
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// The tar block size: headers, data padding and the end-of-archive marker come in these.
const TAR_BLOCK: usize = 512;

/// Longest Kubernetes label name (and value).
const MAX_LABEL_NAME_CHARS: usize = 63;

/// Longest Kubernetes label-key prefix (a DNS subdomain).
const MAX_LABEL_PREFIX_CHARS: usize = 253;

/// Longest valid label key, `prefix/name`; longer keys are cut when shown in a field path.
const MAX_LABEL_KEY_CHARS: usize = MAX_LABEL_PREFIX_CHARS + 1 + MAX_LABEL_NAME_CHARS;

/// Most characters of a caller's value quoted back in a message, so a huge value cannot blow up
/// the error (gRPC trailers are small).
const MAX_QUOTED_CHARS: usize = 100;

/// The settings validation depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationRules {
    /// Accept `http://` URLs for remote layers (otherwise only `https://`).
    pub allow_http_urls: bool,
    /// Largest accepted encoded spec, in bytes.
    pub max_spec_bytes: usize,
}

/// Validates a PutSpec request into a command; `Error::InvalidArgument` lists every violation.
pub fn validate_put(req: PutSpecRequest, rules: &ValidationRules) -> Result<PutCommand, Error> {
    let mut violations = Vec::new();
    let id = collect(
        SpecId::parse(&req.id).map_err(|description| vec![FieldViolation::new("id", description)]),
        &mut violations,
    );
    let spec = collect(
        match req.spec {
            // Taken by value so that a large direct layer is not copied.
            Some(spec) => validate_owned_spec("spec", spec, rules),
            None => Err(vec![required("spec")]),
        },
        &mut violations,
    );
    // Sorted by key, so that violations come out in the same order on every call.
    let labels: Labels = req.labels.into_iter().collect();
    violations.extend(validate_labels("labels", &labels));
    if let Some(generation) = req.expected_generation.filter(|g| *g < 0) {
        violations.push(FieldViolation::new(
            "expected_generation",
            format!(
                "must not be negative, got {generation} (0 means the record must not exist yet)"
            ),
        ));
    }
    let ttl = collect(
        validate_ttl("ttl", req.ttl.as_ref()).map_err(|v| vec![v]),
        &mut violations,
    );
    match (id, spec, ttl) {
        (Some(id), Some(spec), Some(ttl)) if violations.is_empty() => Ok(PutCommand {
            id,
            spec,
            labels,
            expected_generation: req.expected_generation,
            ttl,
        }),
        _ => Err(Error::InvalidArgument(violations)),
    }
}

/// Validates and normalizes an image spec; `field` is the path of the spec in the request.
///
/// Normalizing fills in the diff_id of an uncompressed remote layer that left it empty: it equals
/// the digest, and registry facades refuse an empty one.
pub fn validate_spec(
    field: &str,
    spec: Option<&ImageSpec>,
    rules: &ValidationRules,
) -> Result<ValidatedSpec, Vec<FieldViolation>> {
    match spec {
        Some(spec) => validate_owned_spec(field, spec.clone(), rules),
        None => Err(vec![required(field)]),
    }
}

/// Checks labels (at most 64, Kubernetes label syntax); `field` is the path of the map.
///
/// A label's violations have the path `field["key"]`; a key too long to be valid is cut in the
/// path.
pub fn validate_labels(field: &str, labels: &Labels) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    if labels.len() > MAX_LABELS {
        violations.push(FieldViolation::new(
            field,
            format!(
                "has {} labels, more than the {MAX_LABELS} allowed",
                labels.len()
            ),
        ));
    }
    for (key, value) in labels {
        let path = format!("{field}[{}]", quote(key, MAX_LABEL_KEY_CHARS));
        for problem in label_key_problems(key) {
            violations.push(FieldViolation::new(&path, format!("key {problem}")));
        }
        if !value.is_empty()
            && let Err(problem) = check_label_name(value)
        {
            violations.push(FieldViolation::new(&path, format!("value {problem}")));
        }
    }
    violations
}

/// Checks an optional protobuf `Duration` ttl (1 s to 365 days) and converts it; `field` is its
/// path.
pub fn validate_ttl(
    field: &str,
    ttl: Option<&pbjson_types::Duration>,
) -> Result<Option<TimeDelta>, FieldViolation> {
    let Some(ttl) = ttl else {
        return Ok(None);
    };
    let (seconds, nanos) = (ttl.seconds, ttl.nanos);
    let violation = |description: String| FieldViolation::new(field, description);
    if !(-999_999_999..=999_999_999).contains(&nanos) {
        return Err(violation(format!(
            "is malformed: nanos must be between -999999999 and 999999999, got {nanos}"
        )));
    }
    if (seconds > 0 && nanos < 0) || (seconds < 0 && nanos > 0) {
        return Err(violation(format!(
            "is malformed: seconds ({seconds}) and nanos ({nanos}) must have the same sign"
        )));
    }
    // With one sign for both parts (checked above), comparing (seconds, nanos) pairs
    // lexicographically orders them as the durations they denote.
    if (seconds, nanos) < (MIN_TTL_SECONDS, 0) {
        return Err(violation(format!(
            "must be at least {MIN_TTL_SECONDS}s, got {}",
            describe_duration(seconds, nanos)
        )));
    }
    if (seconds, nanos) > (MAX_TTL_SECONDS, 0) {
        return Err(violation(format!(
            "must be at most 365 days ({MAX_TTL_SECONDS}s), got {}",
            describe_duration(seconds, nanos)
        )));
    }
    u32::try_from(nanos)
        .ok()
        .and_then(|nanos| TimeDelta::new(seconds, nanos))
        .map(Some)
        .ok_or_else(|| violation("is out of range".into()))
}

/// Moves the violations of `result` into `into`, keeping its value.
fn collect<T>(result: Result<T, Vec<FieldViolation>>, into: &mut Vec<FieldViolation>) -> Option<T> {
    result.map_err(|violations| into.extend(violations)).ok()
}

/// The violation of a required field left empty.
fn required(field: impl Into<String>) -> FieldViolation {
    FieldViolation::new(field, "is required")
}

/// `validate_spec` on a spec it may normalize in place.
fn validate_owned_spec(
    field: &str,
    mut spec: ImageSpec,
    rules: &ValidationRules,
) -> Result<ValidatedSpec, Vec<FieldViolation>> {
    let mut violations = Vec::new();

    let base_ref = format!("{field}.base_ref");
    if spec.base_ref.is_empty() {
        violations.push(required(base_ref));
    } else if let Err(problem) = check_image_ref(&spec.base_ref) {
        violations.push(FieldViolation::new(base_ref, problem));
    }
    for (name, value) in [
        ("ide_ref", &spec.ide_ref),
        ("supervisor_ref", &spec.supervisor_ref),
    ] {
        if !value.is_empty()
            && let Err(problem) = check_image_ref(value)
        {
            violations.push(FieldViolation::new(format!("{field}.{name}"), problem));
        }
    }
    for (i, value) in spec.ide_layer_ref.iter().enumerate() {
        let path = format!("{field}.ide_layer_ref[{i}]");
        if value.is_empty() {
            violations.push(FieldViolation::new(
                path,
                "must not be empty: an empty entry names no image",
            ));
        } else if let Err(problem) = check_image_ref(value) {
            violations.push(FieldViolation::new(path, problem));
        }
    }

    for (i, layer) in spec.content_layer.iter_mut().enumerate() {
        let path = format!("{field}.content_layer[{i}]");
        match &mut layer.spec {
            None => violations.push(FieldViolation::new(path, "must set remote or direct")),
            Some(LayerSpec::Remote(remote)) => {
                check_remote_layer(&format!("{path}.remote"), remote, rules, &mut violations);
            }
            Some(LayerSpec::Direct(direct)) => {
                check_direct_layer(&format!("{path}.direct"), direct, &mut violations);
            }
        }
    }

    // Measured after normalization: the normalized encoding is what is stored and served.
    let size = spec.encoded_len();
    if size > rules.max_spec_bytes {
        violations.push(FieldViolation::new(
            field,
            format!(
                "is {size} bytes when encoded, more than the limit of {} bytes",
                rules.max_spec_bytes
            ),
        ));
    }

    if violations.is_empty() {
        Ok(ValidatedSpec::from_normalized_bytes(spec.encode_to_vec()))
    } else {
        Err(violations)
    }
}

/// Checks a remote layer at `path`, and sets an uncompressed layer's empty diff_id to its digest.
fn check_remote_layer(
    path: &str,
    layer: &mut RemoteContentLayer,
    rules: &ValidationRules,
    violations: &mut Vec<FieldViolation>,
) {
    let mut violation = |name: &str, description: String| {
        violations.push(FieldViolation::new(format!("{path}.{name}"), description));
    };
    if let Err(problem) = check_layer_url(&layer.url, rules.allow_http_urls) {
        violation("url", problem);
    }
    let digest_is_valid = match check_digest(&layer.digest) {
        Ok(()) => true,
        Err(problem) => {
            violation("digest", problem);
            false
        }
    };
    let uncompressed = layer.media_type == MEDIA_TYPE_UNCOMPRESSED;
    let compressed = MEDIA_TYPES_COMPRESSED.contains(&layer.media_type.as_str());
    if layer.media_type.is_empty() {
        violation(
            "media_type",
            format!("is required; {}", media_types_sentence()),
        );
    } else if !uncompressed && !compressed {
        violation(
            "media_type",
            format!(
                "{} is not a supported layer media type; {}",
                quote(&layer.media_type, MAX_QUOTED_CHARS),
                media_types_sentence()
            ),
        );
    }
    if layer.size <= 0 {
        violation(
            "size",
            format!("must be greater than 0, got {}", layer.size),
        );
    }
    if layer.diff_id.is_empty() {
        if uncompressed {
            layer.diff_id.clone_from(&layer.digest);
        } else if compressed {
            violation(
                "diff_id",
                format!(
                    "is required for the compressed media type {:?}: it is the digest of the \
                     uncompressed layer, which the registry facade cannot compute",
                    layer.media_type
                ),
            );
        }
    } else if let Err(problem) = check_digest(&layer.diff_id) {
        violation("diff_id", problem);
    } else if uncompressed && digest_is_valid && layer.diff_id != layer.digest {
        // The runtime checks the unpacked layer against diff_id; for an uncompressed blob that is
        // the blob's own digest, so a different one can only fail at pull time.
        violation(
            "diff_id",
            "must equal digest for an uncompressed layer (or be empty, and it is set to digest)"
                .into(),
        );
    }
}

/// The sentence listing the accepted layer media types.
fn media_types_sentence() -> String {
    let mut all = vec![MEDIA_TYPE_UNCOMPRESSED];
    all.extend(MEDIA_TYPES_COMPRESSED);
    format!("use one of {}", all.join(", "))
}

/// Checks a direct layer at `path`: a complete, uncompressed tar archive.
fn check_direct_layer(
    path: &str,
    layer: &DirectContentLayer,
    violations: &mut Vec<FieldViolation>,
) {
    let path = format!("{path}.content");
    if layer.content.is_empty() {
        violations.push(FieldViolation::new(
            path,
            "must not be empty: it must be an uncompressed tar archive",
        ));
    } else if let Err(problem) = check_tar_archive(&layer.content) {
        violations.push(FieldViolation::new(path, problem));
    }
}

/// Checks that `content` is a complete, uncompressed tar archive, reading every entry's data.
///
/// An archive with no entries (just the end-of-archive marker) is accepted: it is a valid, empty
/// layer. The messages never quote the archive's bytes or the tar crate's errors, which can
/// contain file names: the content is the caller's, and error messages end up in logs.
fn check_tar_archive(content: &[u8]) -> Result<(), String> {
    const PREFIX: &str = "is not a complete uncompressed tar archive";
    if content.starts_with(&[0x1f, 0x8b]) {
        return Err(format!(
            "{PREFIX}: it is gzip-compressed; a direct layer carries the uncompressed tar"
        ));
    }
    if content.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(format!(
            "{PREFIX}: it is zstd-compressed; a direct layer carries the uncompressed tar"
        ));
    }

    let mut cursor = Cursor::new(content);
    let mut complete_entries = 0_usize;
    let malformed = |complete_entries: usize| {
        format!(
            "{PREFIX}: after {complete_entries} complete entries, the next header is malformed \
             (wrong checksum, unreadable field, cut short) or the bytes are not a tar archive"
        )
    };
    {
        let mut archive = tar::Archive::new(&mut cursor);
        let entries = archive.entries().map_err(|_| malformed(complete_entries))?;
        for entry in entries {
            let mut entry = entry.map_err(|_| malformed(complete_entries))?;
            let declared = entry.size();
            // The tar crate hands out a short read, not an error, for data cut short.
            let read =
                io::copy(&mut entry, &mut io::sink()).map_err(|_| malformed(complete_entries))?;
            if read != declared {
                return Err(format!(
                    "{PREFIX}: it is cut short in entry {complete_entries}, which declares \
                     {declared} bytes of data but has {read}"
                ));
            }
            complete_entries += 1;
        }
    }

    // The tar crate stops at the first zero block *or* at the end of the bytes, so an archive cut
    // at an entry boundary reads as complete. Only the end-of-archive marker, two zero blocks,
    // tells the two apart. The crate has read the first of them when it stopped before the end.
    let consumed = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    let Some(marker_start) = consumed
        .checked_sub(TAR_BLOCK)
        .filter(|_| consumed < content.len())
    else {
        return Err(format!(
            "{PREFIX}: it does not end with the end-of-archive marker (two zero-filled 512-byte \
             blocks), so it may be cut short"
        ));
    };
    if !content.len().is_multiple_of(TAR_BLOCK) {
        return Err(format!(
            "{PREFIX}: it is {} bytes long, not a whole number of 512-byte blocks",
            content.len()
        ));
    }
    // GNU tar pads archives with zero blocks to a record size; anything else after the marker
    // would be served but ignored by every reader.
    if content[marker_start..].iter().any(|b| *b != 0) {
        return Err(format!(
            "{PREFIX}: it has data after the end-of-archive marker"
        ));
    }
    Ok(())
}

/// Checks the URL of a remote layer: absolute, `https` (or `http` if allowed), with a host.
///
/// The URL is never quoted back: signed URLs carry credentials in their query.
fn check_layer_url(raw: &str, allow_http: bool) -> Result<(), String> {
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

/// Checks a canonical OCI digest: `sha256:` and 64, or `sha512:` and 128, lowercase hex digits.
fn check_digest(raw: &str) -> Result<(), String> {
    if raw.is_empty() {
        return Err("is required".into());
    }
    let canonical = match raw.split_once(':') {
        Some(("sha256", hex)) => is_lowercase_hex(hex, 64),
        Some(("sha512", hex)) => is_lowercase_hex(hex, 128),
        _ => false,
    };
    if canonical {
        Ok(())
    } else {
        Err(format!(
            "{} is not a canonical digest: use sha256: and 64 lowercase hex digits, or sha512: \
             and 128",
            quote(raw, MAX_QUOTED_CHARS)
        ))
    }
}

/// Whether `s` is exactly `len` lowercase hex digits.
fn is_lowercase_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks an image reference, `name[:tag][@digest]`.
///
/// oci-spec's parser does the grammar; the checks after it cover what it lets through that
/// Docker's reference parser (which the facade's runtime uses) refuses.
fn check_image_ref(raw: &str) -> Result<(), String> {
    let quoted = quote(raw, MAX_QUOTED_CHARS);
    let reference = Reference::from_str(raw)
        .map_err(|e| format!("{quoted} is not an image reference name[:tag][@digest]: {e}"))?;
    // oci-spec matches a first path component against the domain grammar, which allows
    // uppercase, even when it then treats it as part of the repository: "Foo/bar" passes.
    if reference
        .repository()
        .bytes()
        .any(|b| b.is_ascii_uppercase())
    {
        return Err(format!(
            "{quoted} is not a valid image reference: the repository name must be lowercase"
        ));
    }
    // A first component with a '.' is taken for the registry even when only the repository
    // grammar matched it: "ex_ample.com/foo" passes.
    if !is_registry_host(reference.registry()) {
        return Err(format!(
            "{quoted} is not a valid image reference: the registry is not a host name with an \
             optional port"
        ));
    }
    // oci-spec's tag pattern is `\w`, which the regex crate reads as Unicode: "tägé" passes.
    if let Some(tag) = reference.tag()
        && !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "{quoted} is not a valid image reference: the tag may only contain ASCII letters, \
             digits, '_', '.' and '-'"
        ));
    }
    // oci-spec's digest pattern is [[:xdigit:]], which admits uppercase hex; digests are
    // lowercase.
    if let Some(digest) = reference.digest()
        && digest.bytes().any(|b| b.is_ascii_uppercase())
    {
        return Err(format!(
            "{quoted} is not a valid image reference: the digest must be lowercase hex"
        ));
    }
    Ok(())
}

/// Whether `registry` is `host[:port]`, the host being '.'-separated components of ASCII letters,
/// digits and inner '-'.
fn is_registry_host(registry: &str) -> bool {
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        && host.split('.').all(|component| {
            !component.is_empty()
                && !component.starts_with('-')
                && !component.ends_with('-')
                && component
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The problems of a label key: `[prefix/]name`, the prefix a DNS subdomain.
fn label_key_problems(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if name.contains('/') {
        return vec![
            "must be a name with an optional DNS-subdomain prefix and a single '/' (prefix/name)"
                .into(),
        ];
    }
    let mut problems = Vec::new();
    if let Some(prefix) = prefix
        && let Err(problem) = check_dns_subdomain(prefix)
    {
        problems.push(format!("prefix {problem}"));
    }
    if let Err(problem) = check_label_name(name) {
        problems.push(format!("name {problem}"));
    }
    problems
}

/// Checks a label name (or non-empty value): at most 63 characters of
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
fn check_label_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    let chars = name.chars().count();
    if chars > MAX_LABEL_NAME_CHARS {
        return Err(format!(
            "must be at most {MAX_LABEL_NAME_CHARS} characters, got {chars}"
        ));
    }
    let bytes = name.as_bytes();
    let well_formed = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if well_formed {
        Ok(())
    } else {
        Err(
            "must consist of ASCII letters, digits, '-', '_' and '.', and start and end with a \
             letter or digit"
                .into(),
        )
    }
}

/// Checks a DNS subdomain (RFC 1123), as Kubernetes does for label-key prefixes.
fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    let chars = s.chars().count();
    if chars > MAX_LABEL_PREFIX_CHARS {
        return Err(format!(
            "must be at most {MAX_LABEL_PREFIX_CHARS} characters, got {chars}"
        ));
    }
    let well_formed = s.split('.').all(|part| {
        let bytes = part.as_bytes();
        bytes.first().is_some_and(is_lower_alphanumeric)
            && bytes.last().is_some_and(is_lower_alphanumeric)
            && bytes.iter().all(|b| is_lower_alphanumeric(b) || *b == b'-')
    });
    if well_formed {
        Ok(())
    } else {
        Err(
            "must be a DNS subdomain: '.'-separated parts of lowercase letters, digits and '-', \
             each starting and ending with a letter or digit"
                .into(),
        )
    }
}

/// Whether `b` is a lowercase ASCII letter or a digit.
fn is_lower_alphanumeric(b: &u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `seconds` and `nanos` as a short human-readable duration.
fn describe_duration(seconds: i64, nanos: i32) -> String {
    if nanos == 0 {
        format!("{seconds}s")
    } else {
        format!("{seconds}s and {nanos}ns")
    }
}

/// `s` quoted and escaped, cut after `max_chars` characters.
fn quote(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;
    use crate::domain::spec_digest;
    use crate::proto::registryfacade::ContentLayer;

    /// `printf 'hello\n' > hello.txt; tar --format=ustar -cf hello.tar hello.txt`: GNU tar pads
    /// the archive with zero blocks to its 10 KiB record size.
    const GNU_TAR: &[u8] = include_bytes!("testdata/hello.tar");
    /// `gzip -9n hello.tar`
    const GZIPPED_TAR: &[u8] = include_bytes!("testdata/hello.tar.gz");
    /// `zstd -19 hello.tar`
    const ZSTD_TAR: &[u8] = include_bytes!("testdata/hello.tar.zst");

    const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const DIRECT_CONTENT: &str = "spec.content_layer[2].direct.content";

    fn rules() -> ValidationRules {
        ValidationRules {
            allow_http_urls: false,
            max_spec_bytes: 1 << 20,
        }
    }

    /// A realistic sha256 digest, different for each seed.
    fn digest(seed: &str) -> String {
        spec_digest(seed.as_bytes())
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(u64::try_from(data.len()).unwrap());
            header.set_mode(0o644);
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn remote(media_type: &str, diff_id: &str, seed: &str) -> ContentLayer {
        ContentLayer {
            spec: Some(LayerSpec::Remote(RemoteContentLayer {
                url: format!("https://blobs.example.com/layers/{seed}?X-Amz-Signature=0a1b"),
                digest: digest(seed),
                diff_id: diff_id.into(),
                media_type: media_type.into(),
                size: 4096,
            })),
        }
    }

    fn direct(content: Vec<u8>) -> ContentLayer {
        ContentLayer {
            spec: Some(LayerSpec::Direct(DirectContentLayer { content })),
        }
    }

    /// A valid spec with every field set: layer 0 is uncompressed with an empty diff_id, layer 1
    /// gzip-compressed, layer 2 direct.
    fn valid_spec() -> ImageSpec {
        ImageSpec {
            base_ref: "docker.io/library/ubuntu:22.04".into(),
            ide_ref: "eu.gcr.io/gitpod-core-dev/build/ide/code:commit-0123abc".into(),
            supervisor_ref: format!(
                "eu.gcr.io/gitpod-core-dev/build/supervisor@{}",
                digest("supervisor")
            ),
            ide_layer_ref: vec![
                "eu.gcr.io/gitpod-core-dev/build/ide/code-cli:latest".into(),
                format!("localhost:5000/ide/extra:1.2@{}", digest("extra")),
            ],
            content_layer: vec![
                remote(MEDIA_TYPE_UNCOMPRESSED, "", "plain"),
                remote(GZIP, &digest("unpacked"), "packed"),
                direct(tar_of(&[("workspace/README.md", b"# hello\n")])),
            ],
        }
    }

    fn valid_request() -> PutSpecRequest {
        PutSpecRequest {
            id: "ws-0123".into(),
            spec: Some(valid_spec()),
            labels: HashMap::from([
                ("gitpod.io/owner".into(), "user-1".into()),
                ("tier".into(), String::new()),
            ]),
            expected_generation: Some(0),
            ttl: Some(duration(3600, 0)),
        }
    }

    fn duration(seconds: i64, nanos: i32) -> pbjson_types::Duration {
        pbjson_types::Duration { seconds, nanos }
    }

    fn request_with_spec(edit: impl FnOnce(&mut ImageSpec)) -> PutSpecRequest {
        let mut req = valid_request();
        edit(req.spec.as_mut().unwrap());
        req
    }

    fn remote_layer(spec: &mut ImageSpec, i: usize) -> &mut RemoteContentLayer {
        match &mut spec.content_layer[i].spec {
            Some(LayerSpec::Remote(layer)) => layer,
            other => panic!("layer {i} is not remote: {other:?}"),
        }
    }

    fn with_direct_content(content: &[u8]) -> PutSpecRequest {
        request_with_spec(|spec| spec.content_layer[2] = direct(content.to_vec()))
    }

    fn violations_with(req: PutSpecRequest, rules: &ValidationRules) -> Vec<FieldViolation> {
        match validate_put(req, rules) {
            Err(Error::InvalidArgument(violations)) => violations,
            Err(other) => panic!("expected InvalidArgument, got {other:?}"),
            Ok(_) => panic!("expected violations, but the request passed"),
        }
    }

    fn violations(req: PutSpecRequest) -> Vec<FieldViolation> {
        violations_with(req, &rules())
    }

    fn the_only_violation(req: PutSpecRequest) -> FieldViolation {
        let mut violations = violations(req);
        assert_eq!(violations.len(), 1, "{violations:?}");
        violations.remove(0)
    }

    fn fields(violations: &[FieldViolation]) -> BTreeSet<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    fn stored_spec(cmd: &PutCommand) -> ImageSpec {
        ImageSpec::decode(cmd.spec.bytes()).unwrap()
    }

    // ---- the whole request ----

    #[test]
    fn a_fully_valid_request_with_every_field_set_passes_and_normalizes_the_diff_id() {
        let original = valid_spec();
        let mut original_for_check = original.clone();
        assert!(remote_layer(&mut original_for_check, 0).diff_id.is_empty());

        let cmd = validate_put(valid_request(), &rules()).unwrap();

        let mut expected = original;
        let plain = remote_layer(&mut expected, 0);
        plain.diff_id = plain.digest.clone();
        assert_eq!(stored_spec(&cmd), expected);
        assert_eq!(cmd.spec.bytes(), expected.encode_to_vec());
        assert_eq!(cmd.spec.digest(), spec_digest(&expected.encode_to_vec()));
        assert_eq!(
            remote_layer(&mut stored_spec(&cmd), 1).diff_id,
            digest("unpacked"),
            "a compressed layer's diff_id is kept as sent"
        );
        assert_eq!(cmd.id.as_str(), "ws-0123");
        assert_eq!(
            cmd.labels,
            Labels::from([
                ("gitpod.io/owner".into(), "user-1".into()),
                ("tier".into(), String::new()),
            ])
        );
        assert_eq!(cmd.expected_generation, Some(0));
        assert_eq!(cmd.ttl, Some(TimeDelta::hours(1)));
    }

    #[test]
    fn the_same_spec_validates_to_the_same_bytes() {
        let first = validate_put(valid_request(), &rules()).unwrap();
        let second = validate_put(valid_request(), &rules()).unwrap();
        assert_eq!(first.spec, second.spec);
    }

    #[test]
    fn several_violations_in_one_request_are_all_reported_at_once() {
        let mut req = request_with_spec(|spec| {
            spec.base_ref.clear();
            remote_layer(spec, 0).digest = "sha256:nope".into();
            spec.content_layer[2] = direct(b"garbage".to_vec());
        });
        req.id = "Not An Id".into();
        req.labels.insert("bad key".into(), "ok".into());
        req.expected_generation = Some(-1);
        req.ttl = Some(duration(0, 0));

        let err = validate_put(req, &rules()).unwrap_err();
        let message = err.to_string();
        let Error::InvalidArgument(violations) = err else {
            panic!("expected InvalidArgument");
        };
        assert_eq!(
            fields(&violations),
            BTreeSet::from([
                "id",
                "spec.base_ref",
                "spec.content_layer[0].remote.digest",
                DIRECT_CONTENT,
                "labels[\"bad key\"]",
                "expected_generation",
                "ttl",
            ])
        );
        assert_eq!(violations.len(), 7, "{violations:?}");
        for violation in &violations {
            assert!(message.contains(&violation.field), "{message}");
        }
    }

    #[test]
    fn a_malformed_id_is_reported_at_id() {
        let mut req = valid_request();
        req.id = "Ws 1".into();
        assert_eq!(the_only_violation(req).field, "id");
    }

    #[test]
    fn a_missing_spec_is_required() {
        let mut req = valid_request();
        req.spec = None;
        let violation = the_only_violation(req);
        assert_eq!(violation, FieldViolation::new("spec", "is required"));
    }

    #[test]
    fn validate_spec_uses_the_given_field_path() {
        assert_eq!(
            validate_spec("record.spec", None, &rules()).unwrap_err(),
            vec![FieldViolation::new("record.spec", "is required")]
        );
        let mut spec = valid_spec();
        spec.base_ref = "Not A Ref".into();
        let violations = validate_spec("record.spec", Some(&spec), &rules()).unwrap_err();
        assert_eq!(
            fields(&violations),
            BTreeSet::from(["record.spec.base_ref"])
        );
        assert!(validate_spec("spec", Some(&valid_spec()), &rules()).is_ok());
    }

    #[test]
    fn a_negative_expected_generation_is_rejected() {
        let mut req = valid_request();
        req.expected_generation = Some(-1);
        assert_eq!(the_only_violation(req).field, "expected_generation");
        for accepted in [None, Some(0), Some(7)] {
            let mut req = valid_request();
            req.expected_generation = accepted;
            let cmd = validate_put(req, &rules()).unwrap();
            assert_eq!(cmd.expected_generation, accepted);
        }
    }

    // ---- image references ----

    #[test]
    fn a_missing_base_ref_is_required() {
        let violation = the_only_violation(request_with_spec(|spec| spec.base_ref.clear()));
        assert_eq!(
            violation,
            FieldViolation::new("spec.base_ref", "is required")
        );
    }

    #[test]
    fn image_references_are_checked_at_their_field_paths() {
        let req = request_with_spec(|spec| {
            spec.base_ref = "not a reference".into();
            spec.ide_ref = "UPPER:tag".into();
            spec.supervisor_ref = "supervisor@sha256:0123".into();
            spec.ide_layer_ref = vec!["fine/ref:1".into(), "bad ref".into(), String::new()];
        });
        let violations = violations(req);
        assert_eq!(
            fields(&violations),
            BTreeSet::from([
                "spec.base_ref",
                "spec.ide_ref",
                "spec.supervisor_ref",
                "spec.ide_layer_ref[1]",
                "spec.ide_layer_ref[2]",
            ])
        );
        assert_eq!(violations.len(), 5, "{violations:?}");
        let empty_entry = violations
            .iter()
            .find(|v| v.field == "spec.ide_layer_ref[2]")
            .unwrap();
        assert!(empty_entry.description.contains("must not be empty"));
    }

    #[test]
    fn empty_optional_references_are_accepted() {
        let req = request_with_spec(|spec| {
            spec.ide_ref.clear();
            spec.supervisor_ref.clear();
            spec.ide_layer_ref.clear();
        });
        assert!(validate_put(req, &rules()).is_ok());
    }

    #[test]
    fn image_references_in_their_usual_forms_are_accepted() {
        let sha256 = "a".repeat(64);
        let sha512 = "b".repeat(128);
        for reference in [
            "ubuntu".to_owned(),
            "ubuntu:22.04".into(),
            "docker.io/library/ubuntu:22.04".into(),
            "eu.gcr.io/gitpod-core-dev/build/ide/code:commit-0123abc".into(),
            "Registry.Example.com/team/image:v1".into(),
            format!("localhost:5000/a/b:1@sha256:{sha256}"),
            format!("registry.example.com:443/team/image@sha512:{sha512}"),
            "a--b/c__d.e:V1.0_rc-1".into(),
            format!("ubuntu:{}", "t".repeat(128)),
        ] {
            assert_eq!(check_image_ref(&reference), Ok(()), "{reference}");
        }
    }

    #[test]
    fn references_oci_spec_accepts_but_docker_refuses_are_rejected() {
        for reference in [
            "Uppercase/lowercase:tag".to_owned(),
            "ex_ample.com/foo".into(),
            "foo:tägé".into(),
            format!("foo@sha256:{}", "F".repeat(64)),
        ] {
            assert!(
                Reference::from_str(&reference).is_ok(),
                "oci-spec now refuses {reference}; the extra check may be unnecessary"
            );
            assert!(
                check_image_ref(&reference).is_err(),
                "{reference} was accepted"
            );
        }
    }

    #[test]
    fn malformed_image_references_are_rejected() {
        for reference in [
            " ubuntu".to_owned(),
            "ubuntu ".into(),
            "ubuntu\n".into(),
            "ubu ntu".into(),
            "UBUNTU".into(),
            "ubuntu:".into(),
            ":tag".into(),
            "a//b".into(),
            "ubuntu@sha256:0123".into(),
            format!("ubuntu@md5:{}", "a".repeat(32)),
            format!("ubuntu:{}", "t".repeat(129)),
        ] {
            assert!(
                check_image_ref(&reference).is_err(),
                "{reference:?} was accepted"
            );
        }
    }

    // ---- content layers ----

    #[test]
    fn a_content_layer_with_neither_remote_nor_direct_is_reported() {
        let violation = the_only_violation(request_with_spec(|spec| {
            spec.content_layer.push(ContentLayer { spec: None });
        }));
        assert_eq!(
            violation,
            FieldViolation::new("spec.content_layer[3]", "must set remote or direct")
        );
    }

    #[test]
    fn every_remote_layer_field_is_checked_at_its_path() {
        let violations = violations(request_with_spec(|spec| {
            let layer = remote_layer(spec, 1);
            layer.url = "ftp://blobs.example.com/x".into();
            layer.digest = "sha256:0123".into();
            layer.diff_id = "unpacked".into();
            layer.media_type = "application/x-tar".into();
            layer.size = 0;
        }));
        assert_eq!(
            fields(&violations),
            BTreeSet::from([
                "spec.content_layer[1].remote.url",
                "spec.content_layer[1].remote.digest",
                "spec.content_layer[1].remote.diff_id",
                "spec.content_layer[1].remote.media_type",
                "spec.content_layer[1].remote.size",
            ])
        );
    }

    #[test]
    fn empty_remote_layer_fields_are_required() {
        let violations = violations(request_with_spec(|spec| {
            *remote_layer(spec, 1) = RemoteContentLayer::default();
        }));
        assert_eq!(
            fields(&violations),
            BTreeSet::from([
                "spec.content_layer[1].remote.url",
                "spec.content_layer[1].remote.digest",
                "spec.content_layer[1].remote.media_type",
                "spec.content_layer[1].remote.size",
            ])
        );
    }

    #[test]
    fn digests_must_be_canonical() {
        for ok in [
            format!("sha256:{}", "0123456789abcdef".repeat(4)),
            format!("sha512:{}", "0123456789abcdef".repeat(8)),
        ] {
            assert_eq!(check_digest(&ok), Ok(()), "{ok}");
        }
        for bad in [
            String::new(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "a".repeat(65)),
            format!("sha256:{}", "g".repeat(64)),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha384:{}", "a".repeat(96)),
            format!("md5:{}", "a".repeat(32)),
            format!("SHA256:{}", "a".repeat(64)),
            format!("sha256{}", "a".repeat(64)),
            format!(" sha256:{}", "a".repeat(64)),
            format!("sha256:{} ", "a".repeat(64)),
        ] {
            assert!(check_digest(&bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_diff_id_must_be_a_canonical_digest_too() {
        let violation = the_only_violation(request_with_spec(|spec| {
            remote_layer(spec, 1).diff_id = format!("sha256:{}", "A".repeat(64));
        }));
        assert_eq!(violation.field, "spec.content_layer[1].remote.diff_id");
    }

    #[test]
    fn the_four_supported_media_types_are_accepted_and_others_are_not() {
        for media_type in [MEDIA_TYPE_UNCOMPRESSED]
            .into_iter()
            .chain(MEDIA_TYPES_COMPRESSED)
        {
            let req = request_with_spec(|spec| {
                let layer = remote_layer(spec, 1);
                layer.media_type = media_type.into();
                if media_type == MEDIA_TYPE_UNCOMPRESSED {
                    layer.diff_id.clear();
                }
            });
            assert!(validate_put(req, &rules()).is_ok(), "{media_type}");
        }
        for media_type in [
            "application/vnd.docker.image.rootfs.diff.tar",
            "application/vnd.oci.image.layer.v1.tar+bzip2",
            "APPLICATION/VND.OCI.IMAGE.LAYER.V1.TAR",
            "",
        ] {
            let violation = the_only_violation(request_with_spec(|spec| {
                remote_layer(spec, 1).media_type = media_type.into();
            }));
            assert_eq!(violation.field, "spec.content_layer[1].remote.media_type");
        }
    }

    #[test]
    fn compressed_layers_require_a_diff_id() {
        for media_type in MEDIA_TYPES_COMPRESSED {
            let violation = the_only_violation(request_with_spec(|spec| {
                let layer = remote_layer(spec, 1);
                layer.media_type = media_type.into();
                layer.diff_id.clear();
            }));
            assert_eq!(violation.field, "spec.content_layer[1].remote.diff_id");
            assert!(violation.description.contains("required"), "{violation}");
        }
    }

    #[test]
    fn an_uncompressed_layer_may_repeat_its_digest_as_diff_id_but_not_name_another() {
        let same = request_with_spec(|spec| {
            let layer = remote_layer(spec, 0);
            layer.diff_id = layer.digest.clone();
        });
        let cmd = validate_put(same, &rules()).unwrap();
        let normalized = validate_put(valid_request(), &rules()).unwrap();
        assert_eq!(cmd.spec, normalized.spec);

        let violation = the_only_violation(request_with_spec(|spec| {
            remote_layer(spec, 0).diff_id = digest("something else");
        }));
        assert_eq!(violation.field, "spec.content_layer[0].remote.diff_id");
    }

    #[test]
    fn the_layer_size_must_be_positive() {
        for size in [0, -1, i64::MIN] {
            let violation =
                the_only_violation(request_with_spec(|spec| remote_layer(spec, 1).size = size));
            assert_eq!(violation.field, "spec.content_layer[1].remote.size");
        }
    }

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
        assert!(validate_put(http(), &relaxed).is_ok());
        assert!(validate_put(valid_request(), &relaxed).is_ok());
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

    // ---- direct layers ----

    fn tar_problem(content: &[u8]) -> String {
        let violation = the_only_violation(with_direct_content(content));
        assert_eq!(violation.field, DIRECT_CONTENT);
        violation.description
    }

    fn header_with_fixed_checksum(block: &[u8]) -> [u8; 512] {
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(block);
        header.set_cksum();
        *header.as_bytes()
    }

    #[test]
    fn archives_built_by_the_tar_crate_are_accepted() {
        let long_name = format!("workspace/{}/file.txt", "d".repeat(150));
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o755);
        builder
            .append_data(&mut dir, "workspace/", io::empty())
            .unwrap();
        for (path, data) in [
            ("workspace/a.txt", &b"hello"[..]),
            ("workspace/exactly-one-block", &[7; 512][..]),
            ("workspace/empty", &b""[..]),
            (long_name.as_str(), &[1; 1000][..]),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(u64::try_from(data.len()).unwrap());
            header.set_mode(0o644);
            builder.append_data(&mut header, path, data).unwrap();
        }
        let archive = builder.into_inner().unwrap();
        assert_eq!(check_tar_archive(&archive), Ok(()));
        assert!(validate_put(with_direct_content(&archive), &rules()).is_ok());
    }

    #[test]
    fn an_archive_made_by_gnu_tar_with_record_padding_is_accepted() {
        assert_eq!(GNU_TAR.len(), 10240);
        assert_eq!(check_tar_archive(GNU_TAR), Ok(()));
    }

    #[test]
    fn an_archive_with_no_entries_is_accepted_as_an_empty_layer() {
        let empty = tar_of(&[]);
        assert_eq!(empty, vec![0; 1024]);
        assert_eq!(check_tar_archive(&empty), Ok(()));
    }

    #[test]
    fn an_empty_direct_layer_is_rejected() {
        assert!(tar_problem(b"").contains("must not be empty"));
    }

    #[test]
    fn an_archive_cut_in_the_middle_of_an_entry_is_rejected() {
        let archive = tar_of(&[("a.txt", b"hello"), ("b.txt", &[1; 700])]);
        // a.txt: header 0..512, data 512..517, padding to 1024; b.txt: header 1024..1536, data
        // 1536..2236, padding to 2560; then the end-of-archive marker.
        for cut in [515, 1536 + 10, 2048] {
            let problem = tar_problem(&archive[..cut]);
            assert!(
                problem.contains("cut short in entry"),
                "cut at {cut}: {problem}"
            );
        }
        for cut in [100, 600, 1100, 1536 + 700] {
            let problem = tar_problem(&archive[..cut]);
            assert!(problem.contains("malformed"), "cut at {cut}: {problem}");
        }
    }

    #[test]
    fn an_archive_cut_at_an_entry_boundary_is_rejected() {
        let archive = tar_of(&[("a.txt", b"hello"), ("b.txt", b"world")]);
        for cut in [1024, 2048] {
            assert!(
                tar_problem(&archive[..cut]).contains("end-of-archive marker"),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_archive_ending_in_a_single_zero_block_is_rejected() {
        let archive = tar_of(&[("a.txt", b"hello")]);
        assert!(tar_problem(&archive[..archive.len() - 512]).contains("end-of-archive marker"));
        assert!(tar_problem(&[0; 512]).contains("end-of-archive marker"));
    }

    #[test]
    fn garbage_bytes_are_rejected() {
        for garbage in [
            &b"hello, this is not a tar archive"[..],
            &[0xab; 2048][..],
            &[b'0'; 1024][..],
            &[0; 100][..],
            &[0; 1000][..],
        ] {
            let problem = tar_problem(garbage);
            assert!(problem.starts_with("is not a complete"), "{problem}");
        }
    }

    #[test]
    fn a_header_with_a_wrong_checksum_is_rejected() {
        let mut archive = tar_of(&[("a.txt", b"hello")]);
        archive[0] = b'b';
        assert!(tar_problem(&archive).contains("malformed"));
    }

    #[test]
    fn compressed_archives_are_rejected() {
        assert!(tar_problem(GZIPPED_TAR).contains("gzip"));
        assert!(tar_problem(ZSTD_TAR).contains("zstd"));
    }

    #[test]
    fn data_after_the_end_of_archive_marker_is_rejected() {
        let mut archive = tar_of(&[("a.txt", b"hello")]);
        archive.extend([1; 512]);
        assert!(tar_problem(&archive).contains("after the end-of-archive marker"));

        let mut concatenated = tar_of(&[("a.txt", b"hello")]);
        concatenated.extend(tar_of(&[("b.txt", b"world")]));
        assert!(tar_problem(&concatenated).contains("after the end-of-archive marker"));
    }

    #[test]
    fn an_archive_that_is_not_whole_blocks_is_rejected() {
        let mut archive = tar_of(&[("a.txt", b"hello")]);
        archive.extend([0; 100]);
        assert!(tar_problem(&archive).contains("512-byte blocks"));
    }

    #[test]
    fn tar_violations_never_contain_the_layer_bytes() {
        let archive = tar_of(&[("SECRET-NAME", b"SECRET-DATA")]);
        let mut bad_size = archive.clone();
        bad_size[124..136].copy_from_slice(b"zzzzzzzzzzz\0");
        let fixed = header_with_fixed_checksum(&bad_size[..512]);
        bad_size[..512].copy_from_slice(&fixed);
        let mut bad_checksum = archive.clone();
        bad_checksum[148] = b'7';
        for broken in [
            bad_size,
            bad_checksum,
            archive[..600].to_vec(),
            archive[..1024].to_vec(),
            [archive.clone(), b"SECRET-TRAILER".to_vec()].concat(),
        ] {
            let problem = tar_problem(&broken);
            assert!(!problem.contains("SECRET"), "{problem}");
        }
    }

    // ---- size limit ----

    #[test]
    fn the_encoded_spec_may_be_exactly_the_size_limit_but_not_more() {
        let size = validate_put(valid_request(), &rules())
            .unwrap()
            .spec
            .bytes()
            .len();
        let exact = ValidationRules {
            max_spec_bytes: size,
            ..rules()
        };
        assert!(validate_put(valid_request(), &exact).is_ok());

        let under = ValidationRules {
            max_spec_bytes: size - 1,
            ..rules()
        };
        let violations = violations_with(valid_request(), &under);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, "spec");
        let description = &violations[0].description;
        assert!(description.contains(&size.to_string()), "{description}");
        assert!(
            description.contains(&(size - 1).to_string()),
            "{description}"
        );
    }

    #[test]
    fn the_size_limit_applies_to_the_normalized_spec() {
        let as_sent = valid_spec().encoded_len();
        let rules = ValidationRules {
            max_spec_bytes: as_sent,
            ..rules()
        };
        let violations = violations_with(valid_request(), &rules);
        assert_eq!(fields(&violations), BTreeSet::from(["spec"]));
    }

    // ---- labels ----

    fn labels_of(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn label_fields(labels: &Labels) -> Vec<String> {
        validate_labels("labels", labels)
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn sixty_four_labels_are_accepted_and_sixty_five_are_not() {
        let mut labels: Labels = (0..64).map(|i| (format!("key-{i}"), "v".into())).collect();
        assert!(validate_labels("labels", &labels).is_empty());
        labels.insert("one-more".into(), "v".into());
        let violations = validate_labels("labels", &labels);
        assert_eq!(fields(&violations), BTreeSet::from(["labels"]));
        assert_eq!(violations.len(), 1);
        assert!(
            violations[0].description.contains("65"),
            "{}",
            violations[0]
        );
    }

    #[test]
    fn a_key_prefix_may_have_253_characters_but_not_254() {
        let longest = format!("{}.example.com", "a".repeat(241));
        assert_eq!(longest.len(), 253);
        assert!(validate_labels("labels", &labels_of(&[(&format!("{longest}/x"), "")])).is_empty());

        let key = format!("a{longest}/x");
        assert_eq!(
            label_fields(&labels_of(&[(&key, "")])),
            vec![format!("labels[{key:?}]")]
        );
    }

    #[test]
    fn label_names_and_values_may_have_63_characters_but_not_64() {
        let n63 = "n".repeat(63);
        let n64 = "n".repeat(64);
        let ok = labels_of(&[(&n63, &n63), (&format!("example.com/{n63}"), "v")]);
        assert!(validate_labels("labels", &ok).is_empty());
        assert_eq!(
            label_fields(&labels_of(&[(&n64, "v")])),
            vec![format!("labels[{n64:?}]")]
        );
        assert_eq!(
            label_fields(&labels_of(&[("k", &n64)])),
            vec!["labels[\"k\"]"]
        );
    }

    #[test]
    fn label_keys_follow_the_kubernetes_syntax() {
        for key in [
            "a",
            "app",
            "A_b.c-D9",
            "example.com/app",
            "k8s.io/x",
            "a-b.c/d",
            "0/0",
        ] {
            assert!(
                validate_labels("labels", &labels_of(&[(key, "v")])).is_empty(),
                "{key:?} was refused"
            );
        }
        for key in [
            "",
            "/x",
            "example.com/",
            "a/b/c",
            "-a",
            "a-",
            "_a",
            "a.",
            "a b",
            "é",
            "Example.com/x",
            "exa_mple.com/x",
            ".example.com/x",
            "example..com/x",
            "-example.com/x",
            "example-.com/x",
        ] {
            assert_eq!(
                label_fields(&labels_of(&[(key, "v")])),
                vec![format!("labels[{key:?}]")],
                "{key:?}"
            );
        }
    }

    #[test]
    fn label_values_are_empty_or_follow_the_name_syntax() {
        for value in ["", "v", "v1.2_3-x", "V"] {
            assert!(
                validate_labels("labels", &labels_of(&[("k", value)])).is_empty(),
                "{value:?} was refused"
            );
        }
        for value in ["-v", "v-", "v ", "v/1", "é", ".", "a:b"] {
            let violations = validate_labels("labels", &labels_of(&[("k", value)]));
            assert_eq!(
                fields(&violations),
                BTreeSet::from(["labels[\"k\"]"]),
                "{value:?}"
            );
            assert!(violations[0].description.starts_with("value"), "{value:?}");
        }
    }

    #[test]
    fn a_key_with_a_bad_prefix_and_a_bad_name_reports_both() {
        let violations = validate_labels("labels", &labels_of(&[("Bad/-bad-", "v")]));
        let descriptions: Vec<_> = violations.iter().map(|v| v.description.as_str()).collect();
        assert_eq!(violations.len(), 2, "{descriptions:?}");
        assert!(descriptions[0].starts_with("key prefix"));
        assert!(descriptions[1].starts_with("key name"));
    }

    #[test]
    fn a_key_too_long_to_be_valid_is_cut_in_its_path() {
        let key = "k".repeat(10_000);
        let violations = validate_labels("labels", &labels_of(&[(&key, "v")]));
        assert_eq!(violations.len(), 1);
        assert!(
            violations[0].field.len() < 400,
            "{}",
            violations[0].field.len()
        );
        assert!(violations[0].field.starts_with("labels[\"kkk"));
    }

    #[test]
    fn label_violations_in_a_request_name_the_key() {
        let mut req = valid_request();
        req.labels.insert("bad key".into(), "-bad value".into());
        let violations = violations(req);
        assert_eq!(fields(&violations), BTreeSet::from(["labels[\"bad key\"]"]));
        assert_eq!(violations.len(), 2, "the key and the value are both wrong");
    }

    // ---- ttl ----

    fn ttl(seconds: i64, nanos: i32) -> Result<Option<TimeDelta>, FieldViolation> {
        validate_ttl("ttl", Some(&duration(seconds, nanos)))
    }

    #[test]
    fn a_ttl_of_exactly_one_second_or_exactly_365_days_is_accepted() {
        assert_eq!(ttl(1, 0), Ok(Some(TimeDelta::seconds(1))));
        assert_eq!(ttl(365 * 24 * 60 * 60, 0), Ok(Some(TimeDelta::days(365))));
        assert_eq!(
            ttl(10, 500_000_000),
            Ok(Some(TimeDelta::milliseconds(10_500)))
        );
    }

    #[test]
    fn a_ttl_just_outside_its_bounds_is_rejected() {
        for (seconds, nanos) in [
            (0, 999_999_999),
            (0, 0),
            (0, -1),
            (-1, 0),
            (MAX_TTL_SECONDS, 1),
            (MAX_TTL_SECONDS + 1, 0),
            (i64::MAX, 999_999_999),
            (i64::MIN, -999_999_999),
        ] {
            let violation = ttl(seconds, nanos).unwrap_err();
            assert_eq!(violation.field, "ttl", "{seconds}s {nanos}ns");
        }
    }

    #[test]
    fn a_malformed_ttl_is_rejected() {
        for (seconds, nanos) in [
            (5, 1_000_000_000),
            (5, -1_000_000_000),
            (5, i32::MAX),
            (-5, i32::MIN),
            (5, -1),
            (-5, 1),
        ] {
            let violation = ttl(seconds, nanos).unwrap_err();
            assert!(
                violation.description.starts_with("is malformed"),
                "{seconds}s {nanos}ns: {violation}"
            );
        }
    }

    #[test]
    fn a_ttl_is_optional_and_reported_at_ttl_in_a_request() {
        assert_eq!(validate_ttl("ttl", None), Ok(None));
        let mut req = valid_request();
        req.ttl = None;
        assert_eq!(validate_put(req, &rules()).unwrap().ttl, None);

        let mut req = valid_request();
        req.ttl = Some(duration(MAX_TTL_SECONDS + 1, 0));
        assert_eq!(the_only_violation(req).field, "ttl");
    }
}
