//! Authentication of driver <-> executor traffic, the same on both binaries and on every gRPC
//! call and Flight stream: mutual TLS (rustls; a server re-reads its certificate, key and CA
//! when the files change, as cert-manager rotates them), a shared bearer token compared in
//! constant time, or both. A listener on a non-loopback address needs one of them unless the
//! operator says `--insecure` (see docs/security.md).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use subtle::ConstantTimeEq;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto};
use tokio_rustls::server::TlsStream;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};
use tracing::warn;

/// Shortest accepted token: 16 bytes of a random token are 128 bits.
pub const MIN_TOKEN_BYTES: usize = 16;
/// A TLS handshake that takes longer is dropped (a peer holding connections open for free).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A call that takes longer is cancelled: a stalled client (a DoPut that stops sending) gives
/// back what it holds. Far above any task the driver sends (its own deadline is 300 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(900);
/// HTTP/2 pings find a peer that vanished without closing its connection.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// How often `--insecure` repeats its warning.
const INSECURE_WARNING_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, Error)]
pub enum SecurityError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(
        "refusing to serve on {addr} ({flag}) without authentication: give --tls-cert, --tls-key and --tls-ca, \
         or --auth-token-file, or --insecure to accept anyone who can reach the port"
    )]
    Unauthenticated { addr: SocketAddr, flag: String },
    #[error("cannot generate a token: {0}")]
    Random(String),
}

/// A shared secret. Never printed: its Debug form is redacted.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads a token file; surrounding whitespace (a trailing newline) is not part of it.
    pub fn from_file(path: &Path) -> Result<Token, SecurityError> {
        let bad = |reason: String| SecurityError::File { path: path.to_path_buf(), reason };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read the token file: {e}")))?;
        let token = bytes.trim_ascii();
        if token.len() < MIN_TOKEN_BYTES {
            return Err(bad(format!("the token must be at least {MIN_TOKEN_BYTES} bytes, the file holds {}", token.len())));
        }
        if !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(bad("the token must be printable ASCII without spaces".into()));
        }
        Ok(Token(token.to_vec()))
    }

    /// 32 random bytes from the operating system, hex-encoded.
    pub fn generate() -> Result<Token, SecurityError> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| SecurityError::Random(e.to_string()))?;
        Ok(Token(random.iter().map(|b| format!("{b:02x}")).collect::<String>().into_bytes()))
    }

    /// Writes the token to a new file only its owner can read (for executors we spawn: a
    /// command line or environment would show it to other users).
    pub fn write_private(&self, path: &Path) -> Result<(), SecurityError> {
        use std::os::unix::fs::OpenOptionsExt;
        let bad = |e: io::Error| SecurityError::File { path: path.to_path_buf(), reason: format!("cannot write the token file: {e}") };
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(bad)?;
        io::Write::write_all(&mut file, &self.0).map_err(bad)
    }

    fn matches_bearer(&self, header: &[u8]) -> bool {
        header.strip_prefix(b"Bearer ").is_some_and(|presented| bool::from(presented.ct_eq(&self.0)))
    }
}

/// The three PEM files of mutual TLS: our certificate chain, its key, and the CA that signs
/// every driver's and executor's certificate (each must allow both serverAuth and clientAuth).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// The name expected in the peer's certificate; default: the host we dial.
    pub server_name: Option<String>,
}

/// How this process authenticates its peers and itself.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub token: Option<Token>,
    pub tls: Option<TlsFiles>,
    /// Serve a non-loopback address without authentication.
    pub insecure: bool,
}

/// The command-line flags, shared by both binaries.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityFlags {
    /// PEM certificate chain for mutual TLS on gRPC and Flight (reloaded when the file changes).
    #[arg(long, env = "CANOPY_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CANOPY_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that peers' certificates must chain to.
    #[arg(long, env = "CANOPY_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Name to expect in peers' certificates instead of the host dialed (for certificates
    /// shared by all pods, e.g. `canopy`).
    #[arg(long, env = "CANOPY_TLS_SERVER_NAME", requires = "tls_cert")]
    pub tls_server_name: Option<String>,
    /// File holding a shared secret (at least 16 bytes) sent as a bearer token on every call.
    #[arg(long, env = "CANOPY_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Allow serving a non-loopback address with neither TLS nor a token (a warning every hour).
    #[arg(long, env = "CANOPY_INSECURE")]
    pub insecure: bool,
}

impl SecurityFlags {
    /// Reads the token and checks the TLS files once, so a typo fails at start.
    pub fn load(&self) -> Result<Security, SecurityError> {
        let token = self.auth_token_file.as_deref().map(Token::from_file).transpose()?;
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                let files = TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone(), server_name: self.tls_server_name.clone() };
                server_config(&files)?;
                Some(files)
            }
            _ => None,
        };
        Ok(Security { token, tls, insecure: self.insecure })
    }
}

impl Security {
    /// The flags that give a spawned process our TLS identity (the token goes by file).
    pub fn tls_args(&self) -> Vec<std::ffi::OsString> {
        let Some(files) = &self.tls else { return Vec::new() };
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        for (flag, path) in [("--tls-cert", &files.cert), ("--tls-key", &files.key), ("--tls-ca", &files.ca)] {
            args.push(flag.into());
            args.push(path.clone().into_os_string());
        }
        if let Some(name) = &files.server_name {
            args.push("--tls-server-name".into());
            args.push(name.into());
        }
        args
    }

    pub fn is_authenticated(&self) -> bool {
        self.token.is_some() || self.tls.is_some()
    }

    /// The safe default: a non-loopback listener needs TLS or a token, or an explicit
    /// `--insecure` (then a warning now and every hour).
    pub fn check_listen(&self, addr: SocketAddr, flag: &str) -> Result<(), SecurityError> {
        if addr.ip().is_loopback() || self.is_authenticated() {
            return Ok(());
        }
        if !self.insecure {
            return Err(SecurityError::Unauthenticated { addr, flag: flag.to_string() });
        }
        tokio::spawn(async move {
            let mut every = tokio::time::interval(INSECURE_WARNING_EVERY);
            loop {
                every.tick().await;
                warn!(%addr, "--insecure: serving without authentication; anyone who reaches this port can read training data");
            }
        });
        Ok(())
    }

    /// A gRPC server with the call deadline and keepalive; add `require_token` as its layer
    /// and serve `incoming`.
    pub fn server() -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .timeout(CALL_TIMEOUT)
            .http2_keepalive_interval(Some(KEEPALIVE))
            .http2_keepalive_timeout(Some(KEEPALIVE))
    }

    /// Checks the bearer token of every incoming call (a no-op without a token).
    pub fn require_token(&self) -> RequireToken {
        RequireToken(self.token.clone().map(Arc::new))
    }

    /// An endpoint for `addr` (host:port): https with our identity and the CA when TLS is on,
    /// files read now so a new connection uses rotated certificates.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint =
            Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| format!("'{addr}' is not a host:port address ({e})"))?;
        let Some(files) = &self.tls else { return Ok(endpoint) };
        let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host).trim_matches(['[', ']']);
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&files.ca)?))
            .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?))
            .domain_name(files.server_name.clone().unwrap_or_else(|| host.to_string()));
        endpoint.tls_config(config).map_err(|e| format!("TLS configuration: {}", crate::error_chain(&e)))
    }

    /// Wraps a connected channel so every call carries our token.
    pub fn authorize(&self, channel: Channel) -> AuthChannel {
        let header = self.token.as_ref().and_then(|t| {
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(&t.0);
            MetadataValue::try_from(value).ok()
        });
        InterceptedService::new(channel, AddToken(header))
    }

    /// Accepts connections on `listener`, with the TLS handshake (if any) done off the accept
    /// loop, for tonic's `serve_with_incoming`.
    pub fn incoming(&self, listener: TcpListener) -> Result<tokio_stream::wrappers::ReceiverStream<io::Result<Conn>>, SecurityError> {
        let reloader = self.tls.as_ref().map(|files| TlsReloader::new(files.clone())).transpose()?.map(Arc::new);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = tx.closed() => return,
                };
                let (stream, _) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Without nodelay every small answer waits ~40 ms for a delayed ACK.
                let _ = stream.set_nodelay(true);
                let Some(reloader) = &reloader else {
                    if tx.send(Ok(Conn::Plain(stream))).await.is_err() {
                        return;
                    }
                    continue;
                };
                let acceptor = TlsAcceptor::from(reloader.current());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let peer = stream.peer_addr().ok();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(Conn::Tls(Box::new(tls)))).await;
                        }
                        Ok(Err(e)) => warn!(peer = ?peer, error = %e, "TLS handshake refused"),
                        Err(_) => warn!(peer = ?peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// A client channel that sends our bearer token.
pub type AuthChannel = InterceptedService<Channel, AddToken>;

#[derive(Clone)]
pub struct AddToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for AddToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The server side: runs on the headers, before a request body is read.
#[derive(Clone)]
pub struct RequireToken(Option<Arc<Token>>);

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else { return Ok(request) };
        match request.metadata().get("authorization") {
            Some(value) if token.matches_bearer(value.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("wrong bearer token")),
            None => Err(Status::unauthenticated("this server requires a bearer token (--auth-token-file)")),
        }
    }
}

/// An accepted connection, TLS or not.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        let tcp = match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        };
        TcpConnectInfo { local_addr: tcp.local_addr().ok(), remote_addr: tcp.peer_addr().ok() }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The server's TLS configuration, rebuilt when a file's modification time changes (checked
/// at each new connection; a broken new file keeps the old configuration, with a warning).
struct TlsReloader {
    files: TlsFiles,
    state: Mutex<(Vec<Option<SystemTime>>, Arc<ServerConfig>)>,
}

impl TlsReloader {
    fn new(files: TlsFiles) -> Result<TlsReloader, SecurityError> {
        let config = server_config(&files)?;
        Ok(TlsReloader { state: Mutex::new((stamps(&files), config)), files })
    }

    fn current(&self) -> Arc<ServerConfig> {
        let now = stamps(&self.files);
        // A poisoned lock only means a panic elsewhere mid-swap; the pair is still whole.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 != now {
            match server_config(&self.files) {
                Ok(config) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded");
                    *state = (now, config);
                }
                Err(e) => {
                    warn!(error = %e, "new TLS files are not usable; keeping the previous ones");
                    state.0 = now;
                }
            }
        }
        state.1.clone()
    }
}

fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [&files.cert, &files.key, &files.ca].iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

/// rustls server configuration that requires a client certificate signed by the CA.
fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, SecurityError> {
    let bad = |path: &Path, reason: String| SecurityError::File { path: path.to_path_buf(), reason };
    let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, SecurityError> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(path, format!("cannot read PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(bad(path, "holds no PEM certificate".into()));
        }
        Ok(certs)
    };
    let chain = certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad(&files.key, format!("cannot read a PEM private key: {e}")))?;
    let mut roots = RootCertStore::empty();
    for ca in certs(&files.ca)? {
        roots.add(ca).map_err(|e| bad(&files.ca, format!("not a usable CA certificate: {e}")))?;
    }
    let provider = Arc::new(crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad(&files.ca, format!("cannot verify clients with it: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&files.cert, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| bad(&files.key, format!("does not match the certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_file(contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, contents).expect("write");
        (dir, path)
    }

    #[test]
    fn token_file_is_trimmed_and_checked() {
        let (_d, path) = token_file(b"0123456789abcdef\n");
        assert!(Token::from_file(&path).expect("token").matches_bearer(b"Bearer 0123456789abcdef"));
        let (_d, path) = token_file(b"short\n");
        let e = Token::from_file(&path).expect_err("short").to_string();
        assert_eq!(e, format!("{}: the token must be at least 16 bytes, the file holds 5", path.display()));
        let (_d, path) = token_file(b"0123456789 abcdef");
        assert!(Token::from_file(&path).expect_err("space").to_string().ends_with("printable ASCII without spaces"));
    }

    #[test]
    fn bearer_comparison_needs_the_exact_token() {
        let token = Token(b"0123456789abcdef".to_vec());
        assert!(!token.matches_bearer(b"Bearer 0123456789abcde"));
        assert!(!token.matches_bearer(b"Bearer 0123456789abcdefg"));
        assert!(!token.matches_bearer(b"0123456789abcdef"));
        assert!(!token.matches_bearer(b"bearer 0123456789abcdef"));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }

    #[test]
    fn generated_tokens_differ_and_are_private() {
        let (a, b) = (Token::generate().expect("a"), Token::generate().expect("b"));
        assert_eq!(a.0.len(), 64);
        assert_ne!(a.0, b.0);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        a.write_private(&path).expect("write");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert!(Token::from_file(&path).expect("read").matches_bearer(&[b"Bearer ".as_slice(), &a.0].concat()));
    }

    #[tokio::test]
    async fn non_loopback_listen_needs_authentication_or_insecure() {
        let open = Security::default();
        assert!(open.check_listen("127.0.0.1:7070".parse().expect("addr"), "--listen").is_ok());
        let e = open.check_listen("0.0.0.0:7070".parse().expect("addr"), "--listen").expect_err("refused").to_string();
        assert_eq!(
            e,
            "refusing to serve on 0.0.0.0:7070 (--listen) without authentication: give --tls-cert, --tls-key and --tls-ca, \
             or --auth-token-file, or --insecure to accept anyone who can reach the port"
        );
        let insecure = Security { insecure: true, ..Security::default() };
        assert!(insecure.check_listen("0.0.0.0:7070".parse().expect("addr"), "--listen").is_ok());
        let token = Security { token: Some(Token(b"0123456789abcdef".to_vec())), ..Security::default() };
        assert!(token.check_listen("0.0.0.0:7070".parse().expect("addr"), "--listen").is_ok());
    }
}
