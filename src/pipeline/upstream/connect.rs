//! Opening a connection to an upstream: TCP, then TLS for an `https://` upstream, both within
//! the connect timeout. The proxy's pool, the multiplexer's streams and `keyway check --probe`
//! all open their connections here, so they verify an upstream the same way.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    Tls(std::io::Error),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "{e}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake: {e}"),
            ConnectError::Handshake(e) => write!(f, "{e}"),
        }
    }
}

/// How an `https://` upstream is reached: the trust and the name its certificate must carry
/// (also sent as SNI).
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl UpstreamTls {
    /// HTTP/1.1 over `config`'s trust: keyway speaks HTTP/1.1 (and WebSocket upgrades) upstream.
    pub fn new(mut config: rustls::ClientConfig, server_name: ServerName<'static>) -> Self {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        UpstreamTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        }
    }
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct Connector {
    /// `host:port`, the port defaulted from the scheme.
    addr: String,
    timeout: Duration,
    tls: Option<UpstreamTls>,
}

impl Connector {
    pub fn new(authority: &Authority, timeout: Duration, tls: Option<UpstreamTls>) -> Self {
        let port = authority
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        Connector {
            addr: format!("{}:{port}", authority.host()),
            timeout,
            tls,
        }
    }

    pub async fn open(&self) -> Result<UpstreamStream, ConnectError> {
        let opening = async {
            let tcp = TcpStream::connect(&*self.addr)
                .await
                .map_err(ConnectError::Io)?;
            // Request and response heads are small writes that must not wait for an ACK.
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(UpstreamStream::Plain(tcp)),
                Some(tls) => tls
                    .connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map(|s| UpstreamStream::Tls(Box::new(s)))
                    .map_err(ConnectError::Tls),
            }
        };
        tokio::time::timeout(self.timeout, opening)
            .await
            .map_err(|_| ConnectError::Timeout)?
    }
}

/// A connection to an upstream, in the clear or over TLS.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
