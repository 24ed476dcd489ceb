//! TLS, mutual TLS, certificate rotation, roles and the secure defaults, against a real server
//! with certificates generated at run time.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use spec_provider::config::{Secret, Settings};
use spec_provider::domain::Caller;
use spec_provider::proto::registryfacade::GetImageSpecRequest;
use spec_provider::proto::registryfacade::spec_provider_client::SpecProviderClient;
use spec_provider::proto::specprovider::v1::spec_admin_client::SpecAdminClient;
use spec_provider::proto::specprovider::v1::{DeleteSpecRequest, GetSpecRequest, ListSpecsRequest};
use spec_provider::server::Application;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

use crate::app::{DEADLINE, eventually, spawn_app_with, test_settings, wait_for_health};
use crate::db::{Backend, TestDb};
use crate::fixtures::{minimal_spec, put, with_token};

const ADMIN_TOKEN: &str = "admin-3f9c1d0e8b7a";
const READER_TOKEN: &str = "reader-5a2b6c7d9e0f";

// Certificates
// ---------------------------------------------------------------------------------------------

/// A certificate authority that issues server and client certificates.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
pub(crate) struct Pair {
    pub(crate) cert: String,
    pub(crate) key: String,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub(crate) fn issue(
        &self,
        names: &[&str],
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> Pair {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for the name registry facades send.
    pub(crate) fn server(&self) -> Pair {
        self.issue(
            &["ws-manager"],
            "spec-provider",
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose only identity is its common name.
    fn client(&self, common_name: &str) -> Pair {
        self.issue(&[], common_name, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// The server's TLS files in a directory of their own.
pub(crate) struct ServerFiles {
    dir: tempfile::TempDir,
}

impl ServerFiles {
    pub(crate) fn new(ca: &Ca, server: &Pair) -> Self {
        let files = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        files.write_pair(server);
        std::fs::write(files.path("ca.crt"), ca.pem()).unwrap();
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the certificate and key as cert-manager does: new files renamed over the old.
    fn write_pair(&self, pair: &Pair) {
        for (name, contents) in [("tls.crt", &pair.cert), ("tls.key", &pair.key)] {
            let tmp = self.path(&format!(".{name}.new"));
            std::fs::write(&tmp, contents).unwrap();
            std::fs::rename(&tmp, self.path(name)).unwrap();
        }
    }

    pub(crate) fn configure(&self, settings: &mut Settings, mutual: bool) {
        settings.tls.cert = Some(self.path("tls.crt"));
        settings.tls.key = Some(self.path("tls.key"));
        if mutual {
            settings.tls.client_ca = Some(self.path("ca.crt"));
        }
        settings.tls.reload_interval = Duration::from_millis(50);
    }
}

// A hand-built TLS client, so that tests choose versions and see what was negotiated
// ---------------------------------------------------------------------------------------------

/// What a connection negotiated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Negotiated {
    version: ProtocolVersion,
    suite: rustls::CipherSuite,
}

pub(crate) fn client_config(
    ca_pem: &str,
    identity: Option<&Pair>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some(pair) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(pair.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A channel over TLS with `config`, verifying the server as `ws-manager`; `negotiated` gets
/// what the last handshake agreed on.
pub(crate) async fn tls_channel(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    negotiated: Arc<Mutex<Option<Negotiated>>>,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(move |_: Uri| {
        let config = config.clone();
        let negotiated = negotiated.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("ws-manager").unwrap();
            let tls = TlsConnector::from(config).connect(name, tcp).await?;
            let session = tls.get_ref().1;
            *negotiated.lock().unwrap() = Some(Negotiated {
                version: session.protocol_version().unwrap(),
                suite: session.negotiated_cipher_suite().unwrap().suite(),
            });
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(DEADLINE)
        .connect_with_connector(connector)
        .await
}

/// A health check over a new TLS connection: the handshake's verdict (under TLS 1.3 a refused
/// client certificate shows only on the first call).
async fn tls_health(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<(), String> {
    let channel = tls_channel(addr, config, Arc::default())
        .await
        .map_err(|e| format!("{e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(drop)
        .map_err(|e| format!("{e:?}"))
}

// Transport
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_tls12_only_client_naming_ws_manager_gets_specs_with_an_ecdhe_aead_suite() {
    let ca = Ca::new("test CA");
    let files = ServerFiles::new(&ca, &ca.server());
    let app = spawn_tls_app(|s| files.configure(s, false)).await;

    let negotiated = Arc::new(Mutex::new(None));
    let config = client_config(&ca.pem(), None, &[&rustls::version::TLS12]);
    let channel = tls_channel(app.addr, config, negotiated.clone())
        .await
        .unwrap();
    wait_for_health(&channel, ServingStatus::Serving).await;
    SpecAdminClient::new(channel.clone())
        .put_spec(put("ws-tls", minimal_spec(1)))
        .await
        .unwrap();
    let answer = SpecProviderClient::new(channel)
        .get_image_spec(GetImageSpecRequest {
            id: "ws-tls".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.spec, Some(minimal_spec(1)));

    let negotiated = negotiated.lock().unwrap().unwrap();
    assert_eq!(negotiated.version, ProtocolVersion::TLSv1_2);
    let suite = format!("{:?}", negotiated.suite);
    assert!(
        suite.contains("ECDHE") && (suite.contains("GCM") || suite.contains("CHACHA20")),
        "{suite}"
    );

    // TLS 1.3 is accepted too.
    let negotiated = Arc::new(Mutex::new(None));
    let config = client_config(&ca.pem(), None, &[&rustls::version::TLS13]);
    tls_channel(app.addr, config, negotiated.clone())
        .await
        .unwrap();
    assert_eq!(
        negotiated.lock().unwrap().unwrap().version,
        ProtocolVersion::TLSv1_3
    );
}

#[tokio::test]
async fn handshakes_in_progress_are_bounded_by_max_handshakes() {
    use tokio::io::AsyncReadExt;

    let ca = Ca::new("test CA");
    let files = ServerFiles::new(&ca, &ca.server());
    let app = spawn_tls_app(|s| {
        files.configure(s, false);
        s.tls.max_handshakes = 2;
        // Silent clients keep their handshake slot for the whole test.
        s.tls.handshake_timeout = Duration::from_secs(600);
    })
    .await;
    let config = client_config(&ca.pem(), None, rustls::DEFAULT_VERSIONS);
    let channel = tls_channel(app.addr, config.clone(), Arc::default())
        .await
        .unwrap();
    wait_for_health(&channel, ServingStatus::Serving).await;

    // Two clients connect and never say hello: they hold both handshake slots. The server
    // accepts connections in the order they were made, so the third is the one beyond the limit.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let mut third = TcpStream::connect(app.addr).await.unwrap();
    let read = tokio::time::timeout(DEADLINE, third.read(&mut [0; 16]))
        .await
        .expect("a connection beyond tls.max_handshakes is closed at once, not left waiting");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without a byte: {read:?}"
    );
    tls_health(app.addr, config.clone())
        .await
        .expect_err("no handshake slot is free");

    // The connection that was already established is served throughout.
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();

    // A silent client that goes away frees its slot (the server notices asynchronously, hence
    // the bounded retry).
    silent.pop();
    eventually("a handshake slot to come free", || async {
        tls_health(app.addr, config.clone()).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn under_mutual_tls_a_client_without_a_certificate_is_refused() {
    let ca = Ca::new("test CA");
    let files = ServerFiles::new(&ca, &ca.server());
    let app = spawn_tls_app(|s| files.configure(s, true)).await;
    let all = rustls::DEFAULT_VERSIONS;

    tls_health(app.addr, client_config(&ca.pem(), None, all))
        .await
        .expect_err("no client certificate");
    for versions in [&[&rustls::version::TLS12][..], &[&rustls::version::TLS13]] {
        tls_health(app.addr, client_config(&ca.pem(), None, versions))
            .await
            .expect_err("no client certificate");
    }
    let client = ca.client("registry-facade");
    tls_health(app.addr, client_config(&ca.pem(), Some(&client), all))
        .await
        .unwrap();
}

#[tokio::test]
async fn certificates_from_another_ca_are_refused_both_ways() {
    let ca = Ca::new("test CA");
    let other = Ca::new("other CA");
    let files = ServerFiles::new(&ca, &ca.server());
    let app = spawn_tls_app(|s| files.configure(s, true)).await;
    let all = rustls::DEFAULT_VERSIONS;
    let good_client = ca.client("registry-facade");

    // The client does not trust the server's CA.
    let err = tls_health(
        app.addr,
        client_config(&other.pem(), Some(&good_client), all),
    )
    .await
    .expect_err("server certificate from an unknown CA");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // The server does not trust the client's CA.
    let stranger = other.client("registry-facade");
    tls_health(app.addr, client_config(&ca.pem(), Some(&stranger), all))
        .await
        .expect_err("client certificate from an unknown CA");
}

#[tokio::test]
async fn a_rotated_server_certificate_is_served_to_new_connections_and_old_ones_stay_up() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let files = ServerFiles::new(&old_ca, &old_ca.server());
    let app = spawn_tls_app(|s| files.configure(s, false)).await;
    let all = rustls::DEFAULT_VERSIONS;

    let open = tls_channel(
        app.addr,
        client_config(&old_ca.pem(), None, all),
        Arc::default(),
    )
    .await
    .unwrap();
    let mut open = HealthClient::new(open);
    open.check(HealthCheckRequest::default()).await.unwrap();
    tls_health(app.addr, client_config(&new_ca.pem(), None, all))
        .await
        .expect_err("the new certificate is not served yet");

    // A torn state (a broken key, as mid-rotation) must not take the listener down; the
    // server keeps its previous certificate until the pair loads.
    std::fs::write(files.path("tls.key"), "not a key").unwrap();
    files.write_pair(&new_ca.server());

    eventually("the rotated certificate to be served", async || {
        tls_health(app.addr, client_config(&new_ca.pem(), None, all))
            .await
            .is_ok()
    })
    .await;
    tls_health(app.addr, client_config(&old_ca.pem(), None, all))
        .await
        .expect_err("new connections get the new certificate");
    open.check(HealthCheckRequest::default())
        .await
        .expect("the connection opened before the rotation still works");
}

// Roles
// ---------------------------------------------------------------------------------------------

/// What the server must do with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Reaches the handler (which may answer NotFound and the like).
    Allowed,
    Unauthenticated,
    PermissionDenied,
}

use Outcome::{Allowed, PermissionDenied as Denied, Unauthenticated as Unauth};

/// The RPCs, in the column order of the tables below.
const RPCS: [&str; 8] = [
    "GetImageSpec",
    "PutSpec",
    "GetSpec",
    "ListSpecs",
    "DeleteSpec",
    "Health.Check",
    "Health.Check(SpecAdmin)",
    "ServerReflection",
];

/// Calls `rpc` on `channel` with `token` (if any) and returns the status code.
async fn call(channel: &Channel, rpc: &str, token: Option<&str>) -> Code {
    fn request<T>(message: T, token: Option<&str>) -> Request<T> {
        match token {
            Some(token) => with_token(message, token),
            None => Request::new(message),
        }
    }
    let code = |result: Result<(), Status>| result.err().map_or(Code::Ok, |s| s.code());
    let mut admin = SpecAdminClient::new(channel.clone());
    match rpc {
        "GetImageSpec" => code(
            SpecProviderClient::new(channel.clone())
                .get_image_spec(request(GetImageSpecRequest { id: "ws-x".into() }, token))
                .await
                .map(drop),
        ),
        "PutSpec" => code(
            admin
                .put_spec(request(put("ws-x", minimal_spec(1)), token))
                .await
                .map(drop),
        ),
        "GetSpec" => code(
            admin
                .get_spec(request(GetSpecRequest { id: "ws-x".into() }, token))
                .await
                .map(drop),
        ),
        "ListSpecs" => code(
            admin
                .list_specs(request(ListSpecsRequest::default(), token))
                .await
                .map(drop),
        ),
        "DeleteSpec" => code(
            admin
                .delete_spec(request(
                    DeleteSpecRequest {
                        id: "ws-gone".into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(drop),
        ),
        "Health.Check" | "Health.Check(SpecAdmin)" => {
            let service = if rpc == "Health.Check" {
                ""
            } else {
                "specprovider.v1.SpecAdmin"
            };
            code(
                HealthClient::new(channel.clone())
                    .check(request(
                        HealthCheckRequest {
                            service: service.into(),
                        },
                        token,
                    ))
                    .await
                    .map(drop),
            )
        }
        "ServerReflection" => {
            let list = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let result = async {
                let mut stream = ServerReflectionClient::new(channel.clone())
                    .server_reflection_info(request(tokio_stream::iter([list]), token))
                    .await?
                    .into_inner();
                stream.message().await.map(drop)
            };
            code(result.await)
        }
        other => panic!("no RPC {other}"),
    }
}

fn outcome(code: Code) -> Outcome {
    match code {
        Code::Unauthenticated => Unauth,
        Code::PermissionDenied => Denied,
        _ => Allowed,
    }
}

/// Checks every RPC for one caller against its row of expected outcomes.
async fn check_row(channel: &Channel, caller: &str, token: Option<&str>, row: [Outcome; 8]) {
    for (rpc, want) in RPCS.into_iter().zip(row) {
        let got = call(channel, rpc, token).await;
        assert_eq!(outcome(got), want, "{caller} calling {rpc} got {got:?}");
    }
}

#[tokio::test]
async fn every_token_role_and_rpc_gets_the_right_code() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.auth.admin_tokens = vec![Secret::new(ADMIN_TOKEN)];
        s.auth.reader_tokens = vec![Secret::new(READER_TOKEN)];
    })
    .await;
    #[rustfmt::skip]
    let table = [
        //                        GetImageSpec Put     Get     List    Delete  Health   Health(A) Reflection
        ("no token",     None,               [Unauth,  Unauth, Unauth, Unauth, Unauth, Allowed, Allowed, Unauth]),
        ("unknown token", Some("nope-0000"), [Unauth,  Unauth, Unauth, Unauth, Unauth, Allowed, Allowed, Unauth]),
        ("reader",       Some(READER_TOKEN), [Allowed, Denied, Denied, Denied, Denied, Allowed, Allowed, Allowed]),
        ("admin",        Some(ADMIN_TOKEN),  [Allowed, Allowed, Allowed, Allowed, Allowed, Allowed, Allowed, Allowed]),
    ];
    for (caller, token, row) in table {
        check_row(&app.channel, caller, token, row).await;
    }
}

#[tokio::test]
async fn without_reader_credentials_reads_stay_open_and_spec_admin_needs_admin() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.auth.admin_tokens = vec![Secret::new(ADMIN_TOKEN)];
    })
    .await;
    #[rustfmt::skip]
    let table = [
        ("no token",     None,               [Allowed, Unauth, Unauth, Unauth, Unauth, Allowed, Allowed, Allowed]),
        ("unknown token", Some("nope-0000"), [Unauth,  Unauth, Unauth, Unauth, Unauth, Allowed, Allowed, Unauth]),
        ("admin",        Some(ADMIN_TOKEN),  [Allowed, Allowed, Allowed, Allowed, Allowed, Allowed, Allowed, Allowed]),
    ];
    for (caller, token, row) in table {
        check_row(&app.channel, caller, token, row).await;
    }
}

#[tokio::test]
async fn every_certificate_identity_and_rpc_gets_the_right_code() {
    let ca = Ca::new("test CA");
    let files = ServerFiles::new(&ca, &ca.server());
    let app = spawn_tls_app(|s| {
        files.configure(s, true);
        s.auth.admin_subjects = vec!["ws-manager-client".into()];
        s.auth.reader_subjects = vec!["registry-facade".into()];
    })
    .await;
    let admin = ca.issue(
        &["ws-manager-client"],
        "someone",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    #[rustfmt::skip]
    let table = [
        ("unmapped certificate", ca.client("stranger"),  [Unauth,  Unauth, Unauth, Unauth, Unauth, Allowed, Allowed, Unauth]),
        ("reader (common name)", ca.client("registry-facade"), [Allowed, Denied, Denied, Denied, Denied, Allowed, Allowed, Allowed]),
        ("admin (DNS name)",     admin,                  [Allowed, Allowed, Allowed, Allowed, Allowed, Allowed, Allowed, Allowed]),
    ];
    for (caller, pair, row) in table {
        let config = client_config(&ca.pem(), Some(&pair), rustls::DEFAULT_VERSIONS);
        let channel = tls_channel(app.addr, config, Arc::default()).await.unwrap();
        check_row(&channel, caller, None, row).await;
    }
}

#[tokio::test]
async fn a_changed_token_file_takes_effect_without_a_restart() {
    const OLD: &str = "old-token-1a2b3c";
    const NEW: &str = "new-token-4d5e6f";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-tokens");
    std::fs::write(&file, format!("{OLD}\n")).unwrap();
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.auth.admin_tokens_file = Some(file.clone());
        s.tls.reload_interval = Duration::from_millis(50);
    })
    .await;
    assert_eq!(call(&app.channel, "ListSpecs", Some(OLD)).await, Code::Ok);
    assert_eq!(
        call(&app.channel, "ListSpecs", Some(NEW)).await,
        Code::Unauthenticated
    );

    // Kubernetes updates a mounted Secret by swapping the file in one step.
    let tmp = dir.path().join(".admin-tokens.new");
    std::fs::write(&tmp, format!("\n{NEW}\n\n")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    eventually("the new token to be accepted", async || {
        call(&app.channel, "ListSpecs", Some(NEW)).await == Code::Ok
    })
    .await;
    assert_eq!(
        call(&app.channel, "ListSpecs", Some(OLD)).await,
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn with_admin_listen_spec_admin_is_served_there_only() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = test_settings(&db);
    settings.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = Application::build(settings).await.unwrap();
    let (addr, admin_addr) = (app.local_addr(), app.admin_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    let connect = |addr: SocketAddr| async move {
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let main = connect(addr).await;
    let admin = connect(admin_addr).await;
    assert_eq!(call(&main, "ListSpecs", None).await, Code::Unimplemented);
    assert_eq!(call(&main, "Health.Check", None).await, Code::Ok);
    // Health on the admin listener is the same service: wait until the database is ready.
    eventually("SpecAdmin to answer on admin_listen", async || {
        call(&admin, "ListSpecs", None).await == Code::Ok
    })
    .await;
    assert_eq!(
        call(&admin, "GetImageSpec", None).await,
        Code::Unimplemented
    );
    drop(tx);
    server.await.unwrap().unwrap();
}

// Secure defaults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn startup_refuses_spec_admin_on_a_public_address_without_credentials() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = test_settings(&db);
    settings.server.listen = "0.0.0.0:0".parse().unwrap();
    let err = match Application::build(settings.clone()).await {
        Ok(_) => panic!("an open SpecAdmin on 0.0.0.0 was accepted"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("server.listen"), "{err}");
    assert!(err.contains("auth.admin_tokens"), "{err}");
    assert!(err.contains("auth.allow_insecure_admin"), "{err}");

    // Each way out is accepted: admin tokens, SpecAdmin on loopback, or the explicit opt-in.
    let mut with_tokens = settings.clone();
    with_tokens.auth.admin_tokens = vec![Secret::new(ADMIN_TOKEN)];
    let mut admin_on_loopback = settings.clone();
    admin_on_loopback.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let mut opted_in = settings;
    opted_in.auth.allow_insecure_admin = true;
    for settings in [with_tokens, admin_on_loopback, opted_in] {
        Application::build(settings).await.unwrap();
    }
}

#[tokio::test]
async fn a_missing_token_file_fails_startup_naming_the_setting() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = test_settings(&db);
    settings.auth.admin_tokens_file = Some(Path::new("/nonexistent/admin-tokens").into());
    let err = match Application::build(settings).await {
        Ok(_) => panic!("a missing token file was accepted"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("auth.admin_tokens_file"), "{err}");
}

/// A TLS server on a fresh SQLite database; it may not be SERVING yet.
async fn spawn_tls_app(customize: impl FnOnce(&mut Settings)) -> TlsApp {
    spawn_tls_app_on(Backend::Sqlite, customize).await
}

/// A TLS server on a fresh database of `backend`; it may not be SERVING yet.
pub(crate) async fn spawn_tls_app_on(
    backend: Backend,
    customize: impl FnOnce(&mut Settings),
) -> TlsApp {
    let db = TestDb::new(backend).await;
    let mut settings = test_settings(&db);
    customize(&mut settings);
    let app = Application::build(settings).await.unwrap();
    let addr = app.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    TlsApp {
        addr,
        _shutdown: tx,
        _handle: AbortOnDrop(handle),
        _db: db,
    }
}

/// A running TLS server (`TestApp` speaks plaintext only).
pub(crate) struct TlsApp {
    pub(crate) addr: SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    _handle: AbortOnDrop,
    _db: TestDb,
}

struct AbortOnDrop(tokio::task::JoinHandle<anyhow::Result<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// Logs
// ---------------------------------------------------------------------------------------------

/// The binary logging at DEBUG, with tokens in a variable and in a file, answering calls with
/// right and wrong tokens: no line shows any of them, and writes' lines name their callers by
/// the tokens' digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_appear_in_the_logs() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    const FILE_TOKEN: &str = "file-token-7e8d9c0b1a2f";
    const WRONG_TOKEN: &str = "wrong-token-6b5a4c3d2e1f";
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-tokens");
    std::fs::write(&token_file, format!("{FILE_TOKEN}\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spec-provider"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "debug")
        .env("SPEC_PROVIDER__SERVER__LISTEN", "127.0.0.1:0")
        .env("SPEC_PROVIDER__SERVER__METRICS_LISTEN", "127.0.0.1:0")
        .env(
            "SPEC_PROVIDER__DATABASE__URL",
            format!("sqlite://{}", dir.path().join("specs.db").display()),
        )
        .env("SPEC_PROVIDER__LOG__FORMAT", "json")
        .env("SPEC_PROVIDER__AUTH__ADMIN_TOKENS", ADMIN_TOKEN)
        .env("SPEC_PROVIDER__AUTH__READER_TOKENS", READER_TOKEN)
        .env("SPEC_PROVIDER__AUTH__ADMIN_TOKENS_FILE", &token_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    for output in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let lines_tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines() {
                let Ok(line) = line else { return };
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    let mut seen = Vec::new();
    let mut wait_for = |what: &str, matches: &dyn Fn(&str) -> bool| -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line {what} within {DEADLINE:?}: {seen:#?}"));
            seen.push(line.clone());
            if matches(&line) {
                return line;
            }
        }
    };

    let listening = wait_for("spec-provider listening", &|l| {
        l.contains("\"spec-provider listening\"")
    });
    let listening: serde_json::Value = serde_json::from_str(&listening).unwrap();
    let addr: SocketAddr = listening["local_addr"].as_str().unwrap().parse().unwrap();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let calls = [
        (ADMIN_TOKEN, "ListSpecs", Code::Ok),
        (FILE_TOKEN, "ListSpecs", Code::Ok),
        (READER_TOKEN, "PutSpec", Code::PermissionDenied),
        (WRONG_TOKEN, "GetImageSpec", Code::Unauthenticated),
    ];
    for (token, rpc, want) in calls {
        let mut got = Code::Unavailable;
        // Until the database is migrated, SpecAdmin answers UNAVAILABLE.
        eventually(
            &format!("{rpc} to answer other than UNAVAILABLE"),
            async || {
                got = call(&channel, rpc, Some(token)).await;
                got != Code::Unavailable
            },
        )
        .await;
        assert_eq!(got, want, "{rpc}");
    }
    // Every call has its log line once it is done: "rpc" from the handler, or "request refused".
    for (token, rpc, want) in calls {
        let code = match want {
            Code::Ok => "\"code\":\"OK\"".to_owned(),
            other => format!("\"code\":\"{other:?}\""),
        };
        let message = if want == Code::Ok {
            "\"rpc\""
        } else {
            "\"request refused\""
        };
        let line = wait_for(rpc, &|l| {
            l.contains(message) && l.contains(&format!("/{rpc}\"")) && l.contains(&code)
        });
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        // A refused write names its caller too, by the token's digest; a read names none.
        match rpc {
            "PutSpec" => assert_eq!(
                line["caller"],
                Caller::token(token.as_bytes()).as_str(),
                "{line}"
            ),
            "GetImageSpec" => assert!(line["caller"].is_null(), "{line}"),
            _ => {}
        }
    }
    // A write's line names its caller by the token's digest; a delete's names who deleted.
    let mut admin = SpecAdminClient::new(channel.clone());
    admin
        .put_spec(with_token(put("ws-logged", minimal_spec(1)), ADMIN_TOKEN))
        .await
        .unwrap();
    let request = with_token(
        DeleteSpecRequest {
            id: "ws-logged".into(),
            ..Default::default()
        },
        FILE_TOKEN,
    );
    assert!(
        admin
            .delete_spec(request)
            .await
            .unwrap()
            .into_inner()
            .deleted
    );
    for (rpc, token) in [("PutSpec", ADMIN_TOKEN), ("DeleteSpec", FILE_TOKEN)] {
        let line = wait_for(rpc, &|l| {
            l.contains("\"rpc\"") && l.contains(&format!("/{rpc}\"")) && l.contains("ws-logged")
        });
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(line["code"], "OK", "{line}");
        assert_eq!(
            line["caller"],
            Caller::token(token.as_bytes()).as_str(),
            "{line}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    // Whatever was logged up to the kill.
    seen.extend(lines.try_iter());
    assert!(seen.len() > 5, "{seen:#?}");
    for token in [ADMIN_TOKEN, READER_TOKEN, FILE_TOKEN, WRONG_TOKEN] {
        for line in &seen {
            assert!(!line.contains(token), "a token is logged: {line}");
        }
    }
}

// The CLI
// ---------------------------------------------------------------------------------------------

/// `spec-provider health` and a client subcommand over mutual TLS, with and without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_connects_over_mutual_tls_with_a_token() {
    let ca = Ca::new("test CA");
    let files = ServerFiles::new(&ca, &ca.server());
    let app = spawn_tls_app(|s| {
        files.configure(s, true);
        s.auth.admin_tokens = vec![Secret::new(ADMIN_TOKEN)];
    })
    .await;
    let client = ca.client("ws-manager-cli");
    std::fs::write(files.path("client.crt"), &client.cert).unwrap();
    std::fs::write(files.path("client.key"), &client.key).unwrap();
    let path = |name: &str| files.path(name).to_str().unwrap().to_owned();
    let tls_flags = [
        "--addr".to_owned(),
        format!("https://127.0.0.1:{}", app.addr.port()),
        "--ca".into(),
        path("ca.crt"),
        "--cert".into(),
        path("client.crt"),
        "--key".into(),
        path("client.key"),
        "--server-name".into(),
        "ws-manager".into(),
    ];
    let run = |subcommand: &'static str, token: Option<&'static str>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_spec-provider"));
        command
            .env_remove("SPEC_PROVIDER_TOKEN")
            .env_remove("SPEC_PROVIDER_ADDR")
            .arg(subcommand)
            .args(&tls_flags)
            .kill_on_drop(true);
        if let Some(token) = token {
            command.env("SPEC_PROVIDER_TOKEN", token);
        }
        async move {
            let output = tokio::time::timeout(DEADLINE, command.output())
                .await
                .expect("the CLI finishes within the deadline")
                .unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };

    // Health needs no token; it exits 0 once SERVING.
    eventually("`spec-provider health` to say SERVING", async || {
        let (code, stdout, stderr) = run("health", None).await;
        if code == Some(0) {
            assert_eq!(stdout.trim(), "SERVING");
            return true;
        }
        assert!(stdout.contains("NOT_SERVING"), "{stdout}{stderr}");
        false
    })
    .await;
    let (code, _, stderr) = run("list", None).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    let (code, _, stderr) = run("list", Some(ADMIN_TOKEN)).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains(ADMIN_TOKEN), "{stderr}");
}
