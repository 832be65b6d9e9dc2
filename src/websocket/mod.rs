//! WebSocket (SPEC §8, F3): the handshake is authenticated like any request, with two more
//! credential places (the Kubernetes bearer subprotocol, and cookies checked against `Origin`),
//! the route's `inject` and credential rules apply to the upstream handshake, a refusal can be a
//! close frame a browser can read, and a connection outlives no credential.
//!
//! `handshake` (subprotocol token, `Origin`), `close` (refusals as close frames), `relay` (the
//! byte tunnel and the frame-aware relay, tracked for shutdown), `pump` (one direction of a
//! relay), `mux` (keyway.mux.v1), `echo` (the builtin echo's WebSocket side).

pub mod close;
pub mod echo;
pub mod handshake;
pub mod mux;
pub mod pump;
pub mod relay;
pub mod tunnels;

use std::time::Duration;

/// `websocket:` on a route.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Lower-case `scheme://host[:port]`; empty: the request's own origin only.
    pub allowed_origins: Vec<String>,
    pub refuse_with: RefuseWith,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RefuseWith {
    /// HTTP 401/403 with the problem body.
    #[default]
    Status,
    /// 101, then a close frame 4401/4403 whose reason is the reason code.
    Close,
}

/// `mux:` on a route.
#[derive(Clone, Copy, Debug)]
pub struct MuxSettings {
    pub max_streams: usize,
    pub max_frame_bytes: usize,
    pub grace: Duration,
}

impl Default for MuxSettings {
    fn default() -> Self {
        MuxSettings {
            max_streams: 256,
            max_frame_bytes: 1024 * 1024,
            grace: Duration::from_secs(30),
        }
    }
}

/// The subprotocol a mux client offers.
pub const MUX_PROTOCOL: &str = "keyway.mux.v1";

/// The close code for a refusal of `status`: 4000 + the HTTP status (4401, 4403, …).
pub fn close_code(status: http::StatusCode) -> u16 {
    4000 + status.as_u16().min(999)
}
