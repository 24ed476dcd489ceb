//! Registry credentials from a Docker config file (`verify.registry_auth_file`), the format of
//! `~/.docker/config.json` and of Kubernetes pull secrets (`.dockerconfigjson`). The file is read
//! again when it changes, so that a rotated Secret takes effect without a restart.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine;
use serde::Deserialize;

/// A user name and password for one registry. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Credential {
    pub(super) username: String,
    pub(super) password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}:***)", self.username)
    }
}

/// The file's top level; other keys (`credHelpers`, `credsStore`, ...) are ignored.
#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

/// One `auths` entry: `auth` (base64 of `user:password`) or `username` and `password`.
#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The credentials by registry host, as of the file's last successful read.
type Credentials = Arc<HashMap<String, Credential>>;

/// What identifies one version of the file without reading it.
type Stamp = (Option<SystemTime>, u64);

/// The credentials of `verify.registry_auth_file`, or none.
pub(super) struct AuthFile {
    path: Option<PathBuf>,
    current: Mutex<(Option<Stamp>, Credentials)>,
}

impl AuthFile {
    /// Reads the file, if one is configured; an unreadable or malformed file is an error that
    /// names the setting.
    pub(super) fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let (stamp, credentials) = match path {
            Some(path) => {
                let (stamp, credentials) = read(path).map_err(|reason| {
                    anyhow::anyhow!(
                        "invalid setting verify.registry_auth_file: {}: {reason}",
                        path.display()
                    )
                })?;
                (Some(stamp), credentials)
            }
            None => (None, HashMap::new()),
        };
        Ok(Self {
            path: path.map(Path::to_path_buf),
            current: Mutex::new((stamp, Arc::new(credentials))),
        })
    }

    /// Whether a file is configured at all (error messages differ).
    pub(super) fn configured(&self) -> bool {
        self.path.is_some()
    }

    /// The registries (`host` or `host:port`) the file has credentials for, as of its last read.
    pub(super) fn registries(&self) -> Vec<String> {
        self.refresh().keys().cloned().collect()
    }

    /// The credential for `registry` (`host` or `host:port`), reading the file again first if
    /// it changed. A changed file that does not read keeps the previous credentials (logged).
    pub(super) fn credential(&self, registry: &str) -> Option<Credential> {
        let credentials = self.refresh();
        credentials.get(&normalize(registry)).cloned()
    }

    fn refresh(&self) -> Credentials {
        let mut current = self.current.lock().expect("auth file lock poisoned");
        if let Some(path) = &self.path {
            let stamp = stamp(path);
            if stamp.is_ok() && stamp.as_ref().ok() != current.0.as_ref() {
                match read(path) {
                    Ok((stamp, credentials)) => *current = (Some(stamp), Arc::new(credentials)),
                    Err(reason) => {
                        tracing::warn!(
                            path = %path.display(),
                            %reason,
                            "verify.registry_auth_file changed but does not read; keeping the \
                             previous credentials"
                        );
                        current.0 = stamp.ok();
                    }
                }
            }
        }
        Arc::clone(&current.1)
    }
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified().ok(), meta.len()))
}

/// Reads and parses the file. The reasons never quote the file's contents.
fn read(path: &Path) -> Result<(Stamp, HashMap<String, Credential>), String> {
    let stamp = stamp(path).map_err(|err| err.to_string())?;
    let text = std::fs::read(path).map_err(|err| err.to_string())?;
    let config: DockerConfig = serde_json::from_slice(&text).map_err(|err| {
        format!(
            "not a Docker config file ({{\"auths\": {{...}}}}): invalid JSON at line {}, column {}",
            err.line(),
            err.column()
        )
    })?;
    let mut credentials = HashMap::new();
    for (key, entry) in config.auths {
        let credential = match (entry.auth, entry.username, entry.password) {
            (_, Some(username), Some(password)) => Credential { username, password },
            (Some(auth), _, _) => decode_auth(&auth)
                .ok_or_else(|| format!("auths.{key:?}.auth is not base64 of user:password"))?,
            _ => {
                return Err(format!(
                    "auths.{key:?} has neither auth nor username and password"
                ));
            }
        };
        credentials.insert(normalize(&key), credential);
    }
    Ok((stamp, credentials))
}

fn decode_auth(auth: &str) -> Option<Credential> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Credential {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// The registry host a key names: keys may carry a scheme and a path
/// (`https://index.docker.io/v1/`), and Docker Hub goes by several names.
fn normalize(key: &str) -> String {
    let key = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "index.docker.io".to_owned()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), contents).unwrap();
        file
    }

    #[test]
    fn both_entry_forms_are_read_and_docker_hub_keys_are_normalized() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with-colon");
        let file = file(&format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "127.0.0.1:5000": {{"username": "bob", "password": "pw"}}
            }}}}"#
        ));
        let auths = AuthFile::load(Some(file.path())).unwrap();
        let hub = auths.credential("index.docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "s3cret:with-colon")
        );
        assert_eq!(auths.credential("127.0.0.1:5000").unwrap().username, "bob");
        assert_eq!(auths.credential("ghcr.io"), None);
        assert!(!format!("{hub:?}").contains("s3cret"));
    }

    #[test]
    fn a_malformed_file_names_the_setting_and_not_its_contents() {
        let file = file(r#"{"auths": {"r.example.com": {"auth": "bm90LWEtcGFpcg=="}}}"#);
        let err = AuthFile::load(Some(file.path())).err().unwrap().to_string();
        assert!(err.contains("verify.registry_auth_file"), "{err}");
        assert!(err.contains("not base64 of user:password"), "{err}");
        assert!(!err.contains("bm90LWEtcGFpcg"), "{err}");
    }

    #[test]
    fn a_changed_file_is_read_again() {
        let file = file(r#"{"auths": {"r.example.com": {"username": "u", "password": "old"}}}"#);
        let auths = AuthFile::load(Some(file.path())).unwrap();
        assert_eq!(auths.credential("r.example.com").unwrap().password, "old");
        std::fs::write(
            file.path(),
            r#"{"auths": {"r.example.com": {"username": "u", "password": "rotated!"}}}"#,
        )
        .unwrap();
        assert_eq!(
            auths.credential("r.example.com").unwrap().password,
            "rotated!"
        );
    }
}
