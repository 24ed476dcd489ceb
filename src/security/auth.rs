//! Access control: a tower layer that gives each gRPC request a [`Role`] from its bearer token
//! (`authorization: Bearer <token>`) or its client certificate, then lets it through or answers
//! UNAUTHENTICATED (no or unknown credentials) or PERMISSION_DENIED (a reader calling SpecAdmin).
//!
//! What each path needs:
//! - health: nothing, so that probes work;
//! - SpecProvider and reflection: the reader or admin role, but only when reader credentials are
//!   configured; otherwise they are open, as registry facades expect;
//! - SpecAdmin: the admin role, once any credentials are configured.
//!
//! A SpecAdmin call let through carries its caller's identity ([`Caller`]) in its extensions, for
//! the handlers to record who wrote; a refused one names it in the log line of its refusal.
//!
//! Tokens are compared in constant time and never logged. Token files are re-read when they
//! change ([`super::watch_files`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use anyhow::Context as _;
use futures::future::{Either, Ready, ready};
use http::{HeaderMap, Request, Response};
use subtle::ConstantTimeEq;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use super::tls::ConnInfo;
use crate::config::AuthSettings;
use crate::domain::Caller;

/// Path prefix of the admin service's methods.
const ADMIN_PREFIX: &str = "/specprovider.v1.SpecAdmin/";
/// Path prefix of the health service's methods.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// SpecProvider, health and reflection.
    Reader,
    /// Everything, SpecAdmin included.
    Admin,
}

/// The configured credentials: tokens from the settings and the token files, and certificate
/// subjects. `Debug` shows how many tokens there are, never the tokens.
#[derive(Default)]
pub struct Credentials {
    admin_tokens: Vec<Vec<u8>>,
    reader_tokens: Vec<Vec<u8>>,
    admin_subjects: HashSet<String>,
    reader_subjects: HashSet<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("admin_tokens", &self.admin_tokens.len())
            .field("reader_tokens", &self.reader_tokens.len())
            .field("admin_subjects", &self.admin_subjects)
            .field("reader_subjects", &self.reader_subjects)
            .finish()
    }
}

impl Credentials {
    /// The credentials `settings` name, reading the token files.
    pub fn load(settings: &AuthSettings) -> anyhow::Result<Self> {
        let tokens = |listed: &[crate::config::Secret], file: &Option<PathBuf>, key: &str| {
            let mut tokens: Vec<Vec<u8>> = listed
                .iter()
                .map(|t| t.expose().as_bytes().to_vec())
                .collect();
            if let Some(file) = file {
                tokens.extend(read_token_file(file).with_context(|| key.to_owned())?);
            }
            anyhow::Ok(tokens)
        };
        Ok(Self {
            admin_tokens: tokens(
                &settings.admin_tokens,
                &settings.admin_tokens_file,
                "auth.admin_tokens_file",
            )?,
            reader_tokens: tokens(
                &settings.reader_tokens,
                &settings.reader_tokens_file,
                "auth.reader_tokens_file",
            )?,
            admin_subjects: settings.admin_subjects.iter().cloned().collect(),
            reader_subjects: settings.reader_subjects.iter().cloned().collect(),
        })
    }

    /// Whether reads need credentials.
    fn reads_restricted(&self) -> bool {
        !self.reader_tokens.is_empty() || !self.reader_subjects.is_empty()
    }

    /// Whether any credentials are configured (then SpecAdmin needs the admin role).
    fn any(&self) -> bool {
        self.reads_restricted() || !self.admin_tokens.is_empty() || !self.admin_subjects.is_empty()
    }

    /// The role of `token`, comparing it with every configured token in constant time.
    fn token_role(&self, token: &[u8]) -> Option<Role> {
        let matches = |tokens: &[Vec<u8>]| {
            tokens.iter().fold(subtle::Choice::from(0), |found, t| {
                found | t.as_slice().ct_eq(token)
            })
        };
        let admin: bool = matches(&self.admin_tokens).into();
        let reader: bool = matches(&self.reader_tokens).into();
        if admin {
            Some(Role::Admin)
        } else if reader {
            Some(Role::Reader)
        } else {
            None
        }
    }

    /// The role a client certificate's names grant, and the name that grants it.
    fn subject_role<'a>(&self, names: &'a [String]) -> Option<(Role, &'a str)> {
        let granting = |subjects: &HashSet<String>| names.iter().find(|n| subjects.contains(*n));
        if let Some(name) = granting(&self.admin_subjects) {
            Some((Role::Admin, name))
        } else {
            granting(&self.reader_subjects).map(|name| (Role::Reader, name.as_str()))
        }
    }

    /// Lets a call to `path` through, or says why not. A SpecAdmin call that is let through
    /// gets its caller's identity (`Some`), which records who wrote a spec; other calls need
    /// none, and GetImageSpec should not pay for hashing a token. A refused SpecAdmin call names
    /// its caller too, as far as its credentials tell, for the log line of the refusal.
    pub fn authorize(
        &self,
        path: &str,
        headers: &HeaderMap,
        conn: Option<&ConnInfo>,
    ) -> Result<Option<Caller>, Refusal> {
        if path.starts_with(HEALTH_PREFIX) {
            return Ok(None);
        }
        let admin = path.starts_with(ADMIN_PREFIX);
        let refuse = |status: Status, who: &dyn Fn() -> Caller| Refusal {
            status,
            caller: admin.then(who),
        };
        let names = conn
            .and_then(|c| c.peer.as_deref())
            .map_or(&[][..], |peer| peer.names.as_slice());
        let subject = self.subject_role(names);
        let token = match headers.get(http::header::AUTHORIZATION) {
            None => None,
            Some(value) => {
                let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer "))
                else {
                    return Err(refuse(
                        Status::unauthenticated(
                            "the authorization metadata must be `Bearer <token>`",
                        ),
                        &|| caller(None, subject, names),
                    ));
                };
                let token = token.trim().as_bytes();
                let Some(role) = self.token_role(token) else {
                    return Err(refuse(
                        Status::unauthenticated("unknown bearer token"),
                        &|| Caller::token(token),
                    ));
                };
                Some((role, token))
            }
        };
        let role = token
            .map(|(role, _)| role)
            .max(subject.map(|(role, _)| role));
        let who = || caller(token, subject, names);
        if admin {
            match role {
                Some(Role::Admin) => {}
                _ if !self.any() => {}
                Some(Role::Reader) => {
                    return Err(refuse(
                        Status::permission_denied(
                            "SpecAdmin needs the admin role; these credentials have the reader role",
                        ),
                        &who,
                    ));
                }
                None => {
                    return Err(refuse(
                        Status::unauthenticated(
                            "SpecAdmin needs an admin bearer token or client certificate",
                        ),
                        &who,
                    ));
                }
            }
            Ok(Some(who()))
        } else if role.is_some() || !self.reads_restricted() {
            Ok(None)
        } else {
            Err(Refusal {
                status: Status::unauthenticated(
                    "a reader or admin bearer token or client certificate is needed",
                ),
                caller: None,
            })
        }
    }
}

/// Why a call is not let through, and for a SpecAdmin call who made it (a write's log line names
/// its caller whether it succeeded or not).
#[derive(Debug)]
pub struct Refusal {
    /// The answer: UNAUTHENTICATED or PERMISSION_DENIED.
    pub status: Status,
    /// For a SpecAdmin call, the identity its credentials claim: an unknown token by its digest,
    /// like a known one; without credentials, its certificate's first name or anonymous.
    pub caller: Option<Caller>,
}

/// Who a caller is: the credential that granted its role (the certificate when both grant the
/// same role), else (no credentials are configured, or the call is refused) its certificate's
/// first name (under mutual TLS the CA vouches for it), else anonymous.
fn caller(token: Option<(Role, &[u8])>, subject: Option<(Role, &str)>, names: &[String]) -> Caller {
    match (token, subject) {
        (Some((token_role, _)), Some((subject_role, name))) if subject_role >= token_role => {
            Caller::certificate(name)
        }
        (None, Some((_, name))) => Caller::certificate(name),
        (Some((_, token)), _) => Caller::token(token),
        (None, None) => names
            .first()
            .map_or_else(Caller::anonymous, |name| Caller::certificate(name)),
    }
}

/// The tokens in `path`: one per line, blank lines ignored.
fn read_token_file(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading tokens from {}", path.display()))?;
    let mut tokens = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !AuthSettings::is_valid_token(line) {
            anyhow::bail!(
                "line {} of {} is not a token (printable ASCII without spaces)",
                n + 1,
                path.display()
            );
        }
        tokens.push(line.as_bytes().to_vec());
    }
    Ok(tokens)
}

/// The credentials in force, replaced when a token file changes.
#[derive(Clone)]
pub struct SharedCredentials {
    settings: Arc<AuthSettings>,
    current: Arc<RwLock<Arc<Credentials>>>,
}

impl SharedCredentials {
    /// Loads the credentials `settings` names; fails, naming the setting, when a token file
    /// cannot be read.
    pub fn load(settings: &AuthSettings) -> anyhow::Result<Self> {
        let credentials = Credentials::load(settings)?;
        Ok(Self {
            settings: Arc::new(settings.clone()),
            current: Arc::new(RwLock::new(Arc::new(credentials))),
        })
    }

    /// The token files, which [`Self::reload`] reads again.
    pub fn paths(&self) -> Vec<PathBuf> {
        [
            &self.settings.admin_tokens_file,
            &self.settings.reader_tokens_file,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    /// Reads the token files again; keeps the previous tokens when one cannot be read.
    pub fn reload(&self) {
        match Credentials::load(&self.settings) {
            Ok(credentials) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(credentials);
                tracing::info!("token files reloaded");
            }
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "a token file changed but cannot be read; keeping the previous tokens"
            ),
        }
    }

    fn get(&self) -> Arc<Credentials> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Checks every request against the [`SharedCredentials`].
#[derive(Clone)]
pub struct AuthLayer {
    credentials: SharedCredentials,
}

impl AuthLayer {
    /// A layer checking requests against `credentials`.
    pub fn new(credentials: SharedCredentials) -> Self {
        Self { credentials }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            credentials: self.credentials.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    credentials: SharedCredentials,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response<ResBody>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let verdict = self.credentials.get().authorize(
            req.uri().path(),
            req.headers(),
            req.extensions().get::<ConnInfo>(),
        );
        match verdict {
            Ok(caller) => {
                // The handlers read it from the request's extensions.
                if let Some(caller) = caller {
                    req.extensions_mut().insert(caller);
                }
                Either::Left(self.inner.call(req))
            }
            Err(Refusal { status, caller }) => {
                // At INFO, as other client errors are: a misconfigured client shows up in the log.
                // Never the credentials: a token is named by its digest's first digits.
                tracing::info!(
                    path = req.uri().path(),
                    code = ?status.code(),
                    caller = caller.as_ref().map(Caller::as_str),
                    "request refused"
                );
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::config::Secret;
    use crate::security::tls::PeerIdentity;

    fn credentials(reader_tokens: &[&str]) -> Credentials {
        let settings = AuthSettings {
            admin_tokens: vec![Secret::new("admin-1")],
            reader_tokens: reader_tokens.iter().map(|t| Secret::new(*t)).collect(),
            admin_subjects: vec!["ws-manager".into()],
            reader_subjects: vec![],
            ..AuthSettings::default()
        };
        Credentials::load(&settings).unwrap()
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    fn code<T>(result: Result<T, Refusal>) -> Code {
        result
            .err()
            .map_or(Code::Ok, |refusal| refusal.status.code())
    }

    #[test]
    fn reads_are_open_until_reader_credentials_exist() {
        let open = credentials(&[]);
        let path = "/registryfacade.SpecProvider/GetImageSpec";
        assert_eq!(
            code(open.authorize(path, &HeaderMap::new(), None)),
            Code::Ok
        );
        let closed = credentials(&["reader-1"]);
        assert_eq!(
            code(closed.authorize(path, &HeaderMap::new(), None)),
            Code::Unauthenticated
        );
        assert_eq!(
            code(closed.authorize(path, &bearer("reader-1"), None)),
            Code::Ok
        );
        assert_eq!(
            code(closed.authorize(path, &bearer("admin-1"), None)),
            Code::Ok
        );
    }

    #[test]
    fn a_certificate_name_gives_its_role() {
        let creds = credentials(&["reader-1"]);
        let conn = ConnInfo {
            remote_addr: None,
            peer: Some(Arc::new(PeerIdentity {
                names: vec!["other".into(), "ws-manager".into()],
            })),
        };
        let path = "/specprovider.v1.SpecAdmin/PutSpec";
        assert_eq!(
            code(creds.authorize(path, &HeaderMap::new(), Some(&conn))),
            Code::Ok
        );
        // A reader token does not lower what the certificate grants.
        assert_eq!(
            code(creds.authorize(path, &bearer("reader-1"), Some(&conn))),
            Code::Ok
        );
    }

    #[test]
    fn a_spec_admin_call_carries_the_identity_that_granted_its_role() {
        let creds = credentials(&["reader-1"]);
        let put = "/specprovider.v1.SpecAdmin/PutSpec";
        let with_names = |names: &[&str]| ConnInfo {
            remote_addr: None,
            peer: Some(Arc::new(PeerIdentity {
                names: names.iter().map(|n| (*n).to_owned()).collect(),
            })),
        };
        let caller = |headers: &HeaderMap, conn: Option<&ConnInfo>| {
            creds
                .authorize(put, headers, conn)
                .unwrap()
                .expect("a SpecAdmin call has a caller")
                .to_string()
        };
        assert_eq!(
            caller(&bearer("admin-1"), None),
            Caller::token(b"admin-1").to_string()
        );
        // The name that is an admin subject, not the certificate's first name.
        let admin_cert = with_names(&["other", "ws-manager"]);
        assert_eq!(
            caller(&HeaderMap::new(), Some(&admin_cert)),
            "cert:ws-manager"
        );
        // The certificate grants the role, not the reader token sent with it.
        assert_eq!(
            caller(&bearer("reader-1"), Some(&admin_cert)),
            "cert:ws-manager"
        );
        // The admin token grants the role, not the unmapped certificate.
        let stranger = with_names(&["stranger"]);
        assert_eq!(
            caller(&bearer("admin-1"), Some(&stranger)),
            Caller::token(b"admin-1").to_string()
        );

        // Reads carry no identity.
        let read = "/registryfacade.SpecProvider/GetImageSpec";
        assert_eq!(
            creds.authorize(read, &bearer("admin-1"), None).unwrap(),
            None
        );

        // Without credentials configured, SpecAdmin is open: the certificate's first name, or
        // anonymous.
        let open = Credentials::default();
        let open_caller = |conn: Option<&ConnInfo>| {
            open.authorize(put, &HeaderMap::new(), conn)
                .unwrap()
                .unwrap()
                .to_string()
        };
        assert_eq!(open_caller(Some(&stranger)), "cert:stranger");
        assert_eq!(open_caller(None), "anonymous");
        assert_eq!(open_caller(Some(&with_names(&[]))), "anonymous");
    }

    #[test]
    fn a_refused_spec_admin_call_names_its_caller_and_a_refused_read_none() {
        let creds = credentials(&["reader-1"]);
        let refused = |path: &str, headers: &HeaderMap, conn: Option<&ConnInfo>| {
            creds
                .authorize(path, headers, conn)
                .expect_err("refused")
                .caller
                .map(|caller| caller.to_string())
        };
        let put = "/specprovider.v1.SpecAdmin/PutSpec";
        assert_eq!(
            refused(put, &bearer("reader-1"), None),
            Some(Caller::token(b"reader-1").to_string())
        );
        assert_eq!(
            refused(put, &bearer("wrong-1"), None),
            Some(Caller::token(b"wrong-1").to_string())
        );
        assert_eq!(
            refused(put, &HeaderMap::new(), None).as_deref(),
            Some("anonymous")
        );
        let stranger = ConnInfo {
            remote_addr: None,
            peer: Some(Arc::new(PeerIdentity {
                names: vec!["stranger".into()],
            })),
        };
        assert_eq!(
            refused(put, &HeaderMap::new(), Some(&stranger)).as_deref(),
            Some("cert:stranger")
        );
        let mut malformed = HeaderMap::new();
        malformed.insert(
            http::header::AUTHORIZATION,
            "Basic admin-1".parse().unwrap(),
        );
        assert_eq!(
            refused(put, &malformed, Some(&stranger)).as_deref(),
            Some("cert:stranger")
        );
        let read = "/registryfacade.SpecProvider/GetImageSpec";
        assert_eq!(refused(read, &HeaderMap::new(), None), None);
        assert_eq!(refused(read, &bearer("wrong-1"), None), None);
    }

    #[test]
    fn malformed_authorization_is_unauthenticated() {
        let creds = credentials(&[]);
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            "Basic admin-1".parse().unwrap(),
        );
        let path = "/registryfacade.SpecProvider/GetImageSpec";
        assert_eq!(
            code(creds.authorize(path, &headers, None)),
            Code::Unauthenticated
        );
    }

    #[test]
    fn debug_output_counts_tokens_without_showing_them() {
        let shown = format!("{:?}", credentials(&["reader-1"]));
        assert!(
            !shown.contains("admin-1") && !shown.contains("reader-1"),
            "{shown}"
        );
    }
}
