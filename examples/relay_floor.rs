//! A lower bound for any HTTP/1 proxy on tokio, for comparing against `hyper_floor` by hand: it
//! parses each request and response head with httparse only to find where the message ends,
//! and relays the bytes unchanged over one upstream connection per client connection. No
//! header map, no rewriting, no timers, no pool. What it costs per request is what is left
//! for tokio, the parser and the four system calls once an HTTP library costs nothing.
//!
//! Usage: `relay_floor LISTEN_ADDR UPSTREAM_ADDR`. Content-Length bodies only; anything else
//! (chunked, upgrades, a head over 16 KiB) closes the connection.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// Where a message read into `buf` ends, once its head is complete.
enum Framing {
    Partial,
    Ends(usize),
}

fn content_length(headers: &[httparse::Header<'_>]) -> Result<usize, BoxError> {
    let mut length = 0;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)?.trim().parse()?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("transfer-encoding is not relayed".into());
        }
    }
    Ok(length)
}

fn request_end(buf: &[u8]) -> Result<Framing, BoxError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = req.parse(buf)?;
    framing(status, req.headers)
}

fn response_end(buf: &[u8]) -> Result<Framing, BoxError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let status = res.parse(buf)?;
    framing(status, res.headers)
}

fn framing(
    status: httparse::Status<usize>,
    headers: &[httparse::Header<'_>],
) -> Result<Framing, BoxError> {
    match status {
        httparse::Status::Partial => Ok(Framing::Partial),
        httparse::Status::Complete(head) => Ok(Framing::Ends(head + content_length(headers)?)),
    }
}

/// Reads one whole message into `buf` (which may already hold its start); `false` on a clean
/// end of stream before any byte of it.
async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    end: fn(&[u8]) -> Result<Framing, BoxError>,
) -> Result<Option<usize>, BoxError> {
    loop {
        if !buf.is_empty()
            && let Framing::Ends(at) = end(buf)?
        {
            while buf.len() < at {
                read_more(stream, buf).await?;
            }
            return Ok(Some(at));
        }
        if buf.len() > MAX_HEAD {
            return Err("head too large".into());
        }
        if read_more(stream, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err("end of stream mid-message".into())
            };
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, BoxError> {
    buf.reserve(4096);
    let n = stream.read_buf(buf).await?;
    Ok(n)
}

async fn relay(mut client: TcpStream, upstream_addr: String) -> Result<(), BoxError> {
    let mut upstream = TcpStream::connect(&upstream_addr).await?;
    upstream.set_nodelay(true)?;
    let mut from_client = Vec::with_capacity(8192);
    let mut from_upstream = Vec::with_capacity(8192);
    while let Some(at) = read_message(&mut client, &mut from_client, request_end).await? {
        upstream.write_all(&from_client[..at]).await?;
        from_client.drain(..at);
        let Some(at) = read_message(&mut upstream, &mut from_upstream, response_end).await? else {
            return Err("the upstream closed".into());
        };
        client.write_all(&from_upstream[..at]).await?;
        from_upstream.drain(..at);
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: relay_floor LISTEN_ADDR UPSTREAM_ADDR".into());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(relay(stream, upstream.clone()));
        }
    })
}
