//! What the client subcommands read: an ImageSpec in the protobuf JSON mapping, from a file of
//! its own (`put`, `verify --file`) or from an entry of a fixed spec file (`import`).

use std::path::Path;

use anyhow::Context;

use crate::proto::registryfacade::ImageSpec;

/// Reads an ImageSpec from the file at `path`, or from standard input when it is `-`.
pub(super) fn read_spec_file(path: &Path) -> anyhow::Result<ImageSpec> {
    let (name, text) = if path.as_os_str() == "-" {
        let text = std::io::read_to_string(std::io::stdin()).context("reading standard input")?;
        ("standard input".to_owned(), text)
    } else {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        (path.display().to_string(), text)
    };
    parse_spec(&mut serde_json::Deserializer::from_str(&text)).map_err(|err| {
        anyhow::anyhow!("{name} is not an ImageSpec in the protobuf JSON mapping: {err}")
    })
}

/// Reads an ImageSpec, naming the path of the field at fault (such as
/// `contentLayer[0].remote.fooBar`) when it is not one.
pub(super) fn parse_spec<'de, D>(deserializer: D) -> Result<ImageSpec, String>
where
    D: serde::Deserializer<'de>,
    D::Error: std::fmt::Display,
{
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        if path == "." {
            err.into_inner().to_string()
        } else {
            format!("at {path}: {}", err.into_inner())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_field_is_named_with_its_path() {
        let value = serde_json::json!({
            "baseRef": "docker.io/library/ubuntu:22.04",
            "contentLayer": [{"remote": {"url": "https://x", "fooBar": 1}}]
        });
        let err = parse_spec(value).unwrap_err();
        assert!(err.contains("contentLayer[0].remote"), "{err}");
        assert!(err.contains("fooBar"), "{err}");
    }

    #[test]
    fn snake_case_names_and_base64_bytes_are_read() {
        let value = serde_json::json!({
            "base_ref": "docker.io/library/ubuntu:22.04",
            "content_layer": [{"direct": {"content": "aGVsbG8="}}]
        });
        let spec = parse_spec(value).unwrap();
        assert_eq!(spec.base_ref, "docker.io/library/ubuntu:22.04");
        let Some(crate::proto::registryfacade::content_layer::Spec::Direct(direct)) =
            &spec.content_layer[0].spec
        else {
            panic!("a direct layer: {spec:?}");
        };
        assert_eq!(direct.content, b"hello");
    }
}
