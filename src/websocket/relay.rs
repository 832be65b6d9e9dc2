//! An upgraded WebSocket connection, relayed until one side ends it.
//!
//! When the credential that opened it never expires (an API key, a public route), the two
//! connections are spliced as bytes: cheapest, and any extension the two ends agreed on passes.
//! When it expires (a token's `exp`) or can be revoked (an OIDC session), keyway speaks
//! WebSocket to both sides and relays messages, so that it can end the connection with a close
//! frame when the credential does: 4401 and the reason (`jwt.expired`, `session.revoked`) as
//! the close reason. Either way the connection is tracked (shutdown closes and waits for it),
//! and its end is logged with its duration.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::pump::{self, Stopped};
use super::tunnels::Tunnels;
use crate::access_log::WebSocketClosed;
use crate::app::App;
use crate::pipeline::authn::Authenticator;
use crate::pipeline::request_id::RequestId;
use crate::pipeline::upstream::Tunnel;
use crate::reason::Reason;
use crate::session::cookie::Read;
use crate::session::store::{Load, now};

/// How often a relay opened with a session asks the session store whether it still holds.
const SESSION_RECHECK: Duration = Duration::from_secs(5);

/// What can end the credential a connection was opened with.
#[derive(Default)]
pub struct Watch {
    /// Seconds since the epoch, and the reason to close with.
    pub expires: Option<(u64, Reason)>,
    pub session: Option<SessionWatch>,
}

/// The session cookie a connection was opened with, to ask its store again.
pub struct SessionWatch {
    pub authenticator: Arc<Authenticator>,
    pub cookie: Read,
}

/// What can end the credential an allowed handshake carries: an OIDC session (asked again
/// every few seconds), else the credential's expiry (a token's `exp` plus the leeway).
pub fn watch(decision: &crate::pipeline::Decision, parts: &http::request::Parts) -> Watch {
    let Some(identity) = &decision.identity else {
        return Watch::default();
    };
    let authenticator = decision
        .route
        .auth
        .iter()
        .find(|a| **a.name() == *identity.authenticator);
    if let Some(auth) = authenticator
        && let Some(oidc) = auth.as_oidc()
    {
        return Watch {
            expires: identity.valid_until.map(|t| (t, Reason::SessionExpired)),
            session: oidc.find(parts).map(|cookie| SessionWatch {
                authenticator: auth.clone(),
                cookie,
            }),
        };
    }
    Watch {
        expires: identity.valid_until.map(|t| (t, Reason::JwtExpired)),
        session: None,
    }
}

impl Watch {
    /// Frames must be understood (to close with a reason) only when the credential can end.
    pub fn frame_aware(&self) -> bool {
        self.expires.is_some() || self.session.is_some()
    }
}

/// Who the connection's log line names, and the log (when the config keeps one).
pub struct Context {
    pub request_id: RequestId,
    pub route: Option<Arc<str>>,
    pub app: Arc<App>,
    /// Whether the config keeps an access log.
    pub log: bool,
}

pub fn spawn(tunnels: &Arc<Tunnels>, tunnel: Tunnel, watch: Watch, context: Context) {
    let open = tunnels.open();
    tokio::spawn(async move {
        let started = Instant::now();
        let mut stopping = open.stopping.clone();
        let (client, upstream) = match tokio::join!(tunnel.client, tunnel.upstream) {
            (Ok(c), Ok(u)) => (c, u),
            _ => return,
        };
        context.app.metrics.websocket_stream_opened("direct");
        let mode = if watch.frame_aware() {
            "frames"
        } else {
            "bytes"
        };
        let ended = if watch.frame_aware() {
            frames(client, upstream, watch, &mut stopping).await
        } else {
            bytes(client, upstream, &mut stopping).await
        };
        let app = &context.app;
        // A credential that ended names its reason; other ends are normal closes.
        app.metrics
            .websocket_stream_closed(ended.reason.map_or("", Reason::code));
        if context.log {
            app.access_log.websocket_closed(&WebSocketClosed {
                request_id: context.request_id.as_str(),
                route: context.route.as_deref().unwrap_or(""),
                relay: mode,
                ended: ended.why,
                close_code: ended.code,
                duration_ms: started.elapsed().as_millis() as u64,
            });
        }
        drop(open);
    });
}

/// How a relay ended, for its log line and metrics.
pub struct Ended {
    pub why: &'static str,
    pub code: u16,
    /// The credential's end that closed it (expiry, revocation), if that was the cause.
    pub reason: Option<Reason>,
}

fn ended(why: &'static str, code: u16) -> Ended {
    Ended {
        why,
        code,
        reason: None,
    }
}

/// The credential ended: 4401 and the reason code.
fn credential_ended(reason: Reason) -> Ended {
    Ended {
        why: reason.code(),
        code: 4401,
        reason: Some(reason),
    }
}

async fn bytes(
    client: Upgraded,
    upstream: Upgraded,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> Ended {
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
            Ok(_) => ended("closed", 0),
            // An abrupt end of either side; dropping both closes the other.
            Err(_) => ended("connection lost", 0),
        },
        () = super::tunnels::stopped(stopping) => ended("keyway shutting down", 0),
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    }))
}

/// What ended a frame-aware relay.
enum Outcome {
    /// The client → upstream direction stopped.
    FromClient(Stopped),
    /// The upstream → client direction stopped.
    FromUpstream(Stopped),
    Credential(Reason),
    Stopping,
}

async fn frames(
    client: Upgraded,
    upstream: Upgraded,
    watch: Watch,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> Ended {
    let client =
        WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, Some(pump::config()))
            .await;
    let upstream = WebSocketStream::from_raw_socket(
        TokioIo::new(upstream),
        Role::Client,
        Some(pump::config()),
    )
    .await;
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    let expiry = async {
        match watch.expires {
            Some((at, reason)) => {
                tokio::time::sleep(until(at)).await;
                reason
            }
            None => std::future::pending().await,
        }
    };
    let session = async {
        if watch.session.is_none() {
            return std::future::pending().await;
        }
        let mut recheck = tokio::time::interval(SESSION_RECHECK);
        recheck.tick().await;
        loop {
            recheck.tick().await;
            if let Some(reason) = session_ended(watch.session.as_ref()).await {
                return reason;
            }
        }
    };
    // Both directions run at once; whichever ends first decides, and the other is dropped
    // (what it had half-sent is flushed by the close that follows).
    let outcome = tokio::select! {
        stopped = pump::pump(&mut client_rx, &mut upstream_tx) => Outcome::FromClient(stopped),
        stopped = pump::pump(&mut upstream_rx, &mut client_tx) => Outcome::FromUpstream(stopped),
        reason = expiry => Outcome::Credential(reason),
        reason = session => Outcome::Credential(reason),
        () = super::tunnels::stopped(stopping) => Outcome::Stopping,
    };
    match outcome {
        Outcome::FromClient(Stopped::Closed(frame)) => {
            pump::last_write(upstream_tx.send(Message::Close(frame))).await;
            ended("client closed", 0)
        }
        Outcome::FromClient(Stopped::SourceLost) | Outcome::FromUpstream(Stopped::SinkLost) => {
            pump::last_write(upstream_tx.close()).await;
            ended("client lost", 0)
        }
        Outcome::FromUpstream(Stopped::Closed(frame)) => {
            pump::last_write(client_tx.send(Message::Close(frame))).await;
            ended("upstream closed", 0)
        }
        Outcome::FromUpstream(Stopped::SourceLost) | Outcome::FromClient(Stopped::SinkLost) => {
            pump::last_write(client_tx.send(close(1011, "upstream gone"))).await;
            ended("upstream lost", 1011)
        }
        // The credential ended: 4401 and the reason code to the client, a normal close upstream.
        Outcome::Credential(reason) => {
            pump::last_write(client_tx.send(close(4401, reason.code()))).await;
            pump::last_write(upstream_tx.send(close(1000, ""))).await;
            credential_ended(reason)
        }
        Outcome::Stopping => {
            pump::last_write(client_tx.send(close(1001, "keyway shutting down"))).await;
            pump::last_write(upstream_tx.send(close(1001, ""))).await;
            ended("keyway shutting down", 1001)
        }
    }
}

/// Whether the session the connection was opened with has ended since.
async fn session_ended(watch: Option<&SessionWatch>) -> Option<Reason> {
    let watch = watch?;
    let oidc = watch.authenticator.as_oidc()?;
    let read = Read {
        value: watch.cookie.value.clone(),
        chunks: watch.cookie.chunks,
    };
    match oidc.sessions.load(read).await {
        Load::Found(session, _) if session.expires_at > now() => None,
        Load::Found(..) => Some(Reason::SessionExpired),
        Load::Missing(_) | Load::Revoked(_) | Load::Invalid(_) => Some(Reason::SessionRevoked),
        // The store is down: the session may well hold; ask again later.
        Load::Unavailable(_) => None,
    }
}

/// The time from now until `at` (seconds since the epoch).
fn until(at: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(at).saturating_sub(now)
}
