//! A TCP proxy in front of the API server that a test can cut off, to play a network
//! partition between one operator replica and the control plane.
//!
//! While cut, it forwards nothing in either direction and closes nothing: requests hang,
//! as when packets are dropped (the hardest case for a leader: no error comes back). When
//! restored, the connections held during the cut are closed, so clients reconnect.
use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct FaultProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free local port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream, cut_rx.clone()));
            }
        });
        Ok(Self { addr, cut, task })
    }

    /// `https://127.0.0.1:<port>`: the API server's certificate names 127.0.0.1, so a
    /// client verifies it through the proxy as it would directly.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// From now on nothing gets through, and nothing is closed.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Traffic flows again; connections held during the cut are closed.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    if !*cut.borrow_and_update() {
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = cut.wait_for(|cut| *cut) => {}
        }
    }
    // Cut: hold the client's socket open, silent, until traffic may flow again.
    let _ = cut.wait_for(|cut| !*cut).await;
}

/// The API server's address, from a client configuration.
pub fn upstream_of(config: &kube::Config) -> Result<SocketAddr> {
    let host = config.cluster_url.host().context("no host")?;
    let port = config.cluster_url.port_u16().unwrap_or(443);
    format!("{host}:{port}")
        .parse()
        .with_context(|| format!("{host}:{port} is not an address"))
}

/// What an [`ErrorProxy`] does with requests that are not watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Forward everything.
    Pass,
    /// `429 Too Many Requests` with `Retry-After: <seconds>`, as API Priority and Fairness
    /// answers when a priority level's queues are full.
    TooManyRequests { retry_after: u32 },
    /// `500 Internal Server Error` with no `Retry-After`: the client's own backoff decides.
    InternalError,
}

/// A proxy in front of the API server that terminates TLS (with the API server's own
/// certificate) and, while told to, answers every request but a watch with an error
/// instead of forwarding it. Watches are left alone, so an operator keeps seeing changes
/// and meets the errors where it writes: that is what exercises its per-object backoff.
///
/// It works per connection (HTTP/1.1, one request at a time): a connection whose first
/// request is a watch is forwarded for its whole life; when errors start, every other
/// forwarded connection is closed, and each new one gets one error answer and is closed.
pub struct ErrorProxy {
    addr: SocketAddr,
    answer: watch::Sender<Answer>,
    task: tokio::task::JoinHandle<()>,
}

impl ErrorProxy {
    /// Listens on a free local port and forwards to `upstream`, presenting the
    /// certificate and key in the PEM files (the API server's: `certs/apiserver.crt`).
    pub async fn start(
        upstream: SocketAddr,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_file_iter(cert)
            .context("reading the certificate")?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(key).context("reading the key")?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (answer, answer_rx) = watch::channel(Answer::Pass);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (acceptor, connector, answer) =
                    (acceptor.clone(), connector.clone(), answer_rx.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(socket).await {
                        serve_http(tls, upstream, connector, answer).await;
                    }
                });
            }
        });
        Ok(Self { addr, answer, task })
    }

    /// `https://127.0.0.1:<port>` (a client must skip verification, or trust the API
    /// server's certificate for this address).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// From now on, requests that are not watches get `answer`.
    pub fn answer(&self, answer: Answer) {
        self.answer.send_replace(answer);
    }
}

impl Drop for ErrorProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_http<S>(
    mut client: S,
    upstream: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    mut answer: watch::Receiver<Answer>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The first request's head, to tell a watch from the rest.
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let first_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let first_line = String::from_utf8_lossy(first_line);
    let is_watch = first_line.contains("watch=true") || first_line.contains("watch=1");
    let current = *answer.borrow_and_update();
    if !is_watch && current != Answer::Pass {
        let _ = client.write_all(&error_response(current)).await;
        let _ = client.shutdown().await;
        return;
    }
    let Ok(tcp) = TcpStream::connect(upstream).await else {
        return;
    };
    let name = rustls_pki_types::ServerName::IpAddress(upstream.ip().into());
    let Ok(mut server) = connector.connect(name, tcp).await else {
        return;
    };
    if server.write_all(&head).await.is_err() {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        // Errors start: this connection could carry the next write; close it.
        _ = answer.wait_for(|a| *a != Answer::Pass), if !is_watch => {}
    }
}

fn error_response(answer: Answer) -> Vec<u8> {
    let (code, text, reason, retry_after) = match answer {
        Answer::TooManyRequests { retry_after } => (
            429,
            "Too Many Requests",
            "TooManyRequests",
            Some(retry_after),
        ),
        _ => (500, "Internal Server Error", "InternalError", None),
    };
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("injected by the test proxy: {text}"),
        "reason": reason, "code": code,
    })
    .to_string();
    let mut response = format!(
        "HTTP/1.1 {code} {text}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(seconds) = retry_after {
        response += &format!("Retry-After: {seconds}\r\n");
    }
    response += "\r\n";
    response += &body;
    response.into_bytes()
}

/// Accepts the API server's self-signed certificate (this is a test proxy on loopback),
/// still checking the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
