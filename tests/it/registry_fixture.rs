//! Real parts for the registry tests, on loopback: Debian's `docker-registry` (the reference
//! registry, distribution 2.8) started on a free port with storage in a temporary directory, with
//! no auth, `htpasswd` (bcrypt) or `token` auth; a token issuer for the latter; images pushed
//! through the registry's HTTP API; a content server for remote layers, and one that answers
//! only when the test lets it; a redirector; a registry stand-in for the manifests the reference
//! registry refuses to store.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;
/// `sha256:<hex>` of `bytes`.
pub use spec_provider::domain::sha256_digest as sha256;
use spec_provider::proto::registryfacade::content_layer::Spec as LayerSpec;
use spec_provider::proto::registryfacade::{ContentLayer, RemoteContentLayer};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::app::eventually;

/// The OCI media types the tests push.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The user the authenticating registries and the token issuer accept.
pub const USER: &str = "ws-manager";
/// Its password; the tests check that it never shows up in a report.
pub const PASSWORD: &str = "pull-secret-Zq7";

/// A gzip tar layer with one file, and the digest of its uncompressed tar (its diff_id).
pub fn gzip_layer(contents: &[u8]) -> (Vec<u8>, String) {
    let tar = crate::fixtures::tar_bytes("hello.txt", contents);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), sha256(&tar))
}

/// How a test registry authenticates.
pub enum RegistryAuth {
    /// Anyone may push and pull.
    Open,
    /// HTTP basic auth from an htpasswd file with bcrypt entries.
    Htpasswd,
    /// Bearer tokens from this issuer.
    Token(Arc<TokenIssuer>),
    /// Bearer tokens signed by this issuer, whose realm the registry names as `realm` (a URL
    /// that redirects to the issuer, say).
    TokenVia {
        issuer: Arc<TokenIssuer>,
        realm: String,
    },
}

/// A `docker-registry serve` process, stopped when dropped.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`, the registry part of references.
    pub host: String,
    auth: RegistryAuthKind,
    http: reqwest::Client,
    _child: Child,
    _dir: TempDir,
}

enum RegistryAuthKind {
    Open,
    Basic,
    Token(Arc<TokenIssuer>),
}

impl TestRegistry {
    /// Starts a registry and waits until it answers. Panics (the test fails) when
    /// `docker-registry` is not installed: `.ci/run` installs it.
    pub async fn start(auth: RegistryAuth) -> Self {
        // The pushing client is reqwest's, which wants the process's rustls provider (the
        // verifier installs the same one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().await;
        let host = format!("127.0.0.1:{port}");
        let (auth_yaml, kind) = match auth {
            RegistryAuth::Open => (String::new(), RegistryAuthKind::Open),
            RegistryAuth::Htpasswd => {
                let path = dir.path().join("htpasswd");
                let hash = bcrypt::hash(PASSWORD, 5).unwrap();
                std::fs::write(&path, format!("{USER}:{hash}\n")).unwrap();
                (
                    format!(
                        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                        path.display()
                    ),
                    RegistryAuthKind::Basic,
                )
            }
            RegistryAuth::Token(issuer) => {
                let realm = issuer.realm();
                token_auth(dir.path(), issuer, realm)
            }
            RegistryAuth::TokenVia { issuer, realm } => token_auth(dir.path(), issuer, realm),
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {host}\n{auth_yaml}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("docker-registry must be installed (apt-get install docker-registry)");
        let registry = Self {
            host,
            auth: kind,
            http: reqwest::Client::new(),
            _child: child,
            _dir: dir,
        };
        let ping = format!("http://{}/v2/", registry.host);
        eventually("docker-registry to answer", || {
            let (http, ping) = (registry.http.clone(), ping.clone());
            async move { http.get(&ping).send().await.is_ok() }
        })
        .await;
        registry
    }

    /// The registry's log, for assertions about what it was sent.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default()
    }

    fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        repository: &str,
    ) -> reqwest::RequestBuilder {
        match &self.auth {
            RegistryAuthKind::Open => request,
            RegistryAuthKind::Basic => request.basic_auth(USER, Some(PASSWORD)),
            RegistryAuthKind::Token(issuer) => {
                request.bearer_auth(issuer.token(repository, &["pull", "push"]))
            }
        }
    }

    /// Uploads a blob (monolithic: POST, then PUT with the digest) and returns its digest.
    pub async fn push_blob(&self, repository: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let start = format!("http://{}/v2/{repository}/blobs/uploads/", self.host);
        let answer = self
            .authorize(self.http.post(&start), repository)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED, "starting an upload");
        let location = answer.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        let mut url = url::Url::parse(&format!("http://{}", self.host))
            .unwrap()
            .join(&location)
            .unwrap();
        url.query_pairs_mut().append_pair("digest", &digest);
        let answer = self
            .authorize(self.http.put(url), repository)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::CREATED, "finishing an upload");
        digest
    }

    /// PUTs a manifest under `reference` (a tag or a digest) and returns its digest.
    pub async fn push_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let url = format!("http://{}/v2/{repository}/manifests/{reference}", self.host);
        let answer = self
            .authorize(self.http.put(url), repository)
            .header(header::CONTENT_TYPE, media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = answer.status();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "pushing a manifest: {}",
            answer.text().await.unwrap_or_default()
        );
        sha256(body)
    }

    /// Pushes a one-layer image for linux/`architecture` as `manifest_type` (OCI or Docker v2)
    /// and returns its manifest: its blobs are pushed, the manifest not yet. Every call makes a
    /// different image, so pushing one under a tag again moves the tag.
    pub async fn push_image_manifest(
        &self,
        repository: &str,
        architecture: &str,
        manifest_type: &str,
    ) -> Vec<u8> {
        static IMAGES: AtomicUsize = AtomicUsize::new(0);
        let n = IMAGES.fetch_add(1, Ordering::Relaxed);
        let (layer, diff_id) =
            gzip_layer(format!("{repository} for {architecture}, image {n}").as_bytes());
        let config = serde_json::to_vec(&json!({
            "architecture": architecture,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "config": {}
        }))
        .unwrap();
        let layer_digest = self.push_blob(repository, &layer).await;
        let config_digest = self.push_blob(repository, &config).await;
        let (config_type, layer_type) = if manifest_type == DOCKER_MANIFEST {
            (
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        } else {
            ("application/vnd.oci.image.config.v1+json", GZIP_LAYER)
        };
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": layer.len()}]
        }))
        .unwrap()
    }

    /// Pushes a linux/amd64 OCI image as `repository:tag` and returns its manifest digest.
    pub async fn push_image(&self, repository: &str, tag: &str) -> String {
        let manifest = self
            .push_image_manifest(repository, "amd64", OCI_MANIFEST)
            .await;
        self.push_manifest(repository, tag, OCI_MANIFEST, &manifest)
            .await
    }

    /// Pushes an OCI index of one image per architecture as `repository:tag` and returns the
    /// index's digest.
    pub async fn push_index(&self, repository: &str, tag: &str, architectures: &[&str]) -> String {
        let mut entries = Vec::new();
        for architecture in architectures {
            let manifest = self
                .push_image_manifest(repository, architecture, OCI_MANIFEST)
                .await;
            let digest = sha256(&manifest);
            self.push_manifest(repository, &digest, OCI_MANIFEST, &manifest)
                .await;
            entries.push(json!({
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": manifest.len(),
                "platform": {"os": "linux", "architecture": architecture}
            }));
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries
        }))
        .unwrap();
        self.push_manifest(repository, tag, OCI_INDEX, &index).await
    }
}

/// The `auth:` section of a registry that trusts `issuer`'s tokens and sends clients to `realm`.
fn token_auth(dir: &Path, issuer: Arc<TokenIssuer>, realm: String) -> (String, RegistryAuthKind) {
    let bundle = dir.join("token-ca.pem");
    std::fs::write(&bundle, &issuer.cert_pem).unwrap();
    (
        format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    \
             rootcertbundle: {}\n",
            TokenIssuer::SERVICE,
            TokenIssuer::ISSUER,
            bundle.display()
        ),
        RegistryAuthKind::Token(issuer),
    )
}

/// A port that was free a moment ago (the registry binds it itself).
pub async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A Docker config file (`{"auths": {...}}`) with `user:password` for `registry`, in the `auth`
/// (base64) form.
pub fn docker_config(dir: &Path, registry: &str, user: &str, password: &str) -> std::path::PathBuf {
    let path = dir.join("config.json");
    let auth = STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        &path,
        json!({"auths": {registry: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    path
}

/// A Docker config file with [`USER`] and [`PASSWORD`] for each of `registries`, in the
/// `username` / `password` form.
pub fn docker_config_for_all(dir: &Path, registries: &[&str]) -> std::path::PathBuf {
    let path = dir.join("config.json");
    let auths: serde_json::Map<String, serde_json::Value> = registries
        .iter()
        .map(|registry| {
            (
                (*registry).to_owned(),
                json!({"username": USER, "password": PASSWORD}),
            )
        })
        .collect();
    std::fs::write(&path, json!({ "auths": auths }).to_string()).unwrap();
    path
}

/// A token issuer for `auth: token` registries: answers `GET /token` with a JWT (ES256, its
/// certificate in the `x5c` header, which the registry's `rootcertbundle` trusts) granting the
/// scope asked for to [`USER`] with [`PASSWORD`], and nothing to anyone else. Keeps every token
/// it issued, so that tests can look for them where they must not be.
pub struct TokenIssuer {
    /// Where it listens.
    pub addr: SocketAddr,
    cert_pem: String,
    cert_der: Vec<u8>,
    key: EcdsaKeyPair,
    issued: Mutex<Vec<String>>,
    requests: AtomicUsize,
}

impl TokenIssuer {
    const SERVICE: &str = "test-registry";
    const ISSUER: &str = "test-token-issuer";

    /// Starts the issuer on a port of its own on 127.0.0.1.
    pub async fn start() -> Arc<Self> {
        Self::start_on(Ipv4Addr::LOCALHOST).await
    }

    /// Starts the issuer on a port of its own on `ip`, a loopback address.
    pub async fn start_on(ip: Ipv4Addr) -> Arc<Self> {
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["token-issuer".to_owned()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_pair.serialize_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), 0))
            .await
            .unwrap();
        let issuer = Arc::new(Self {
            addr: listener.local_addr().unwrap(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
            issued: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/token", get(issue))
            .with_state(Arc::clone(&issuer));
        tokio::spawn(async move { axum::serve(listener, app).await });
        issuer
    }

    /// Its `/token` URL, the realm registries name.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Every token it issued over HTTP (not those [`Self::token`] made for the test itself).
    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }

    /// How many requests it got.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// A token granting `actions` on `repository`.
    pub fn token(&self, repository: &str, actions: &[&str]) -> String {
        let access = if actions.is_empty() {
            json!([])
        } else {
            json!([{"type": "repository", "name": repository, "actions": actions}])
        };
        self.sign(access)
    }

    fn sign(&self, access: serde_json::Value) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header =
            json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&self.cert_der)]});
        let claims = json!({
            "iss": Self::ISSUER,
            "sub": USER,
            "aud": Self::SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{now}-{}", rand_suffix()),
            "access": access
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .unwrap();
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

fn rand_suffix() -> u64 {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes).unwrap();
    u64::from_le_bytes(bytes)
}

/// `GET /token?service=...&scope=repository:NAME:pull`: the scope for the right basic
/// credentials, an empty grant for anonymous callers, 401 for wrong credentials.
async fn issue(State(issuer): State<Arc<TokenIssuer>>, uri: Uri, headers: HeaderMap) -> Response {
    issuer.requests.fetch_add(1, Ordering::SeqCst);
    let scope = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "scope")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let mut parts = scope.splitn(3, ':');
    let (_, repository, actions) = (parts.next(), parts.next().unwrap_or_default(), parts.next());
    let access: Vec<&str> = actions.unwrap_or_default().split(',').collect();
    let token = match headers.get(header::AUTHORIZATION) {
        None => issuer.token(repository, &[]),
        Some(value) => {
            let expected = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
            if value.to_str().ok() != Some(expected.as_str()) {
                return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
            }
            issuer.token(repository, &access)
        }
    };
    issuer.issued.lock().unwrap().push(token.clone());
    let body = json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A content server: `/layer` serves the layer (HEAD too), `/no-head` refuses HEAD (405) and
/// serves ranged GETs, `/signed-for-get` does the same with a 403 to HEAD (as stores do for a URL
/// signed for GET), `/to-metadata` redirects into 169.254.0.0/16, `/loop` redirects to itself;
/// anything else is 404. Counts the requests it gets.
pub struct ContentServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How many requests it got.
    pub requests: Arc<AtomicUsize>,
}

impl ContentServer {
    /// Serves `layer`.
    pub async fn start(layer: Vec<u8>) -> Self {
        let requests = Arc::new(AtomicUsize::new(0));
        let layer = Arc::new(layer);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counted = Arc::clone(&requests);
        let app = axum::Router::new()
            .route("/layer", get(full))
            .route("/no-head", get(ranged).head(StatusCode::METHOD_NOT_ALLOWED))
            .route("/signed-for-get", get(ranged).head(StatusCode::FORBIDDEN))
            .route(
                "/to-metadata",
                get(|| async {
                    (
                        StatusCode::FOUND,
                        [(header::LOCATION, "http://169.254.169.254/latest/meta-data")],
                    )
                }),
            )
            .route(
                "/loop",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }),
            )
            .layer(axum::middleware::from_fn(
                move |req, next: axum::middleware::Next| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async move { next.run(req).await }
                },
            ))
            .with_state(layer);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, requests }
    }

    /// The URL of `path` on it.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn full(State(layer): State<Arc<Vec<u8>>>) -> Vec<u8> {
    layer.as_ref().clone()
}

async fn ranged(State(layer): State<Arc<Vec<u8>>>, headers: HeaderMap) -> Response {
    if headers.get(header::RANGE).and_then(|v| v.to_str().ok()) == Some("bytes=0-0") {
        let range = format!("bytes 0-0/{}", layer.len());
        return (
            StatusCode::PARTIAL_CONTENT,
            [(header::CONTENT_RANGE, range)],
            layer[..1].to_vec(),
        )
            .into_response();
    }
    layer.as_ref().clone().into_response()
}

/// A server whose every answer is a redirect to `target` (the request's query kept); returns
/// where it listens.
pub async fn redirector(target: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let location = match uri.query() {
            Some(query) => format!("{target}?{query}"),
            None => target.clone(),
        };
        async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
            )
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A content server whose every request waits until the test lets one through
/// ([`Self::let_through`]), then gets the layer; counts the requests waiting and the most that
/// ever waited at once.
pub struct GatedServer {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Gate>,
}

struct Gate {
    layer: Vec<u8>,
    open: tokio::sync::Semaphore,
    waiting: AtomicUsize,
    most_waiting: AtomicUsize,
    answered: AtomicUsize,
}

impl GatedServer {
    /// Serves `layer` at every path, once let through.
    pub async fn start(layer: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Gate {
            layer,
            open: tokio::sync::Semaphore::new(0),
            waiting: AtomicUsize::new(0),
            most_waiting: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/{*path}", get(gated))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    /// The URL of `path` on it.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Lets one waiting (or the next) request through.
    pub fn let_through(&self) {
        self.state.open.add_permits(1);
    }

    /// How many requests wait now.
    pub fn waiting(&self) -> usize {
        self.state.waiting.load(Ordering::SeqCst)
    }

    /// The most requests that ever waited at once.
    pub fn most_waiting(&self) -> usize {
        self.state.most_waiting.load(Ordering::SeqCst)
    }

    /// How many requests were answered.
    pub fn answered(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }
}

async fn gated(State(gate): State<Arc<Gate>>) -> Vec<u8> {
    let waiting = gate.waiting.fetch_add(1, Ordering::SeqCst) + 1;
    gate.most_waiting.fetch_max(waiting, Ordering::SeqCst);
    gate.open.acquire().await.unwrap().forget();
    gate.waiting.fetch_sub(1, Ordering::SeqCst);
    gate.answered.fetch_add(1, Ordering::SeqCst);
    gate.layer.clone()
}

/// A stand-in for a registry, for what the reference registry refuses to store: answers `/v2/`
/// with 200 and `/v2/big/manifests/<tag>` with an OCI manifest one byte over 4 MiB, with its
/// length (tag `sized`) or streamed without one (tag `streamed`); anything else is 404.
pub async fn oversized_manifest_registry() -> SocketAddr {
    const OVER_4_MIB: usize = 4 * 1024 * 1024 + 1;
    let manifest = || {
        let padding = OVER_4_MIB - r#"{"schemaVersion":2,"annotations":{"pad":""}}"#.len();
        format!(
            r#"{{"schemaVersion":2,"annotations":{{"pad":"{}"}}}}"#,
            "x".repeat(padding)
        )
        .into_bytes()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/v2/", get(|| async { "{}" }))
        .route(
            "/v2/big/manifests/sized",
            get(move || async move { ([(header::CONTENT_TYPE, OCI_MANIFEST)], manifest()) }),
        )
        .route(
            "/v2/big/manifests/streamed",
            get(move || async move {
                let chunks = manifest()
                    .chunks(64 * 1024)
                    .map(|chunk| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(chunk)))
                    .collect::<Vec<_>>();
                (
                    [(header::CONTENT_TYPE, OCI_MANIFEST)],
                    axum::body::Body::from_stream(futures::stream::iter(chunks)),
                )
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A remote gzip layer at `url`.
pub fn remote(url: String, digest: &str, diff_id: &str, size: usize) -> ContentLayer {
    ContentLayer {
        spec: Some(LayerSpec::Remote(RemoteContentLayer {
            url,
            digest: digest.to_owned(),
            diff_id: diff_id.to_owned(),
            media_type: GZIP_LAYER.to_owned(),
            size: size as i64,
        })),
    }
}
