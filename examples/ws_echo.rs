//! A WebSocket echo server, the upstream of `bench/mux.sh`: every text and binary message comes
//! back unchanged, on any path. It has no keyway code, so what the bench measures in front of it
//! is keyway alone.
//!
//! Usage: `ws_echo [PORT] [--workers N] [--flood]`. It listens on 127.0.0.1:PORT (0, the default,
//! picks a free port) and prints the bound address as its first line of stdout, so a script can
//! wait for that line instead of sleeping. With `--flood`, a connection that receives the text
//! `flood` sends 64 KiB binary messages as fast as the socket takes them, until it is closed: the
//! upstream a non-reading multiplexer client is measured against.

use std::io::Write;

use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The size of each message a flooding connection sends.
const FLOOD_MESSAGE: usize = 64 * 1024;

#[derive(Parser)]
#[command(about = "A WebSocket echo server on 127.0.0.1")]
struct Args {
    /// The port to listen on; 0 picks a free one.
    #[arg(default_value_t = 0)]
    port: u16,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// A connection that receives the text "flood" floods it with 64 KiB binary messages.
    #[arg(long)]
    flood: bool,
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()?
        .block_on(serve(args.port, args.flood))
}

async fn serve(port: u16, flood: bool) -> Result<(), BoxError> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", listener.local_addr()?)?;
    // A script reading this line through a pipe or a file waits for it: flush now, not at exit.
    stdout.flush()?;
    drop(stdout);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors, or a connection reset before it was accepted: the
            // listener itself is fine, and the bench sees the refusals on its side.
            Err(e) => {
                eprintln!("ws_echo: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            if let Err(e) = echo(tcp, flood).await {
                eprintln!("ws_echo: connection: {e}");
            }
        });
    }
}

async fn echo(tcp: TcpStream, flood: bool) -> Result<(), BoxError> {
    // Each echo is one small write answering one read: without this, Nagle would hold some of
    // them back waiting for an acknowledgement.
    tcp.set_nodelay(true)?;
    // tungstenite's default 128 KiB read buffer is zero-filled before every read call: for
    // small messages that memset would be most of this server's CPU, on the core it shares
    // with the load generator. 8 KiB steps; larger messages still arrive whole.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let mut ws = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await?;
    while let Some(message) = ws.next().await {
        match message? {
            Message::Text(text) if flood && text.as_str() == "flood" => {
                return flood_until_closed(ws).await;
            }
            m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m).await?,
            // Pings are answered by tungstenite itself; a close is answered by it as well, and
            // the stream then ends.
            _ => {}
        }
    }
    Ok(())
}

/// Sends 64 KiB binary messages until the peer closes or goes away. The peer is still read, so
/// that its close frame (or its end) stops the flood.
async fn flood_until_closed(
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
) -> Result<(), BoxError> {
    let payload = Bytes::from(vec![0x5a; FLOOD_MESSAGE]);
    let (mut sink, mut source) = ws.split();
    loop {
        tokio::select! {
            sent = sink.send(Message::Binary(payload.clone())) => {
                if sent.is_err() {
                    return Ok(());
                }
            }
            message = source.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}
