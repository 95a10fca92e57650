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
