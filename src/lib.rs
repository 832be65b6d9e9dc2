//! keyway: an identity-aware reverse proxy and authentication gateway.
//!
//! The request pipeline lives in `pipeline` (one module per stage); `config` compiles the YAML
//! file into the immutable runtime it runs on; `server` accepts connections; `cli` is the
//! command line.

// Request data never panics the gateway: no unwrap, expect or panic outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
pub mod access_log;
pub mod admin;
pub mod app;
pub mod civil_time;
pub mod cli;
pub mod config;
pub mod explain;
pub mod fetch;
pub mod forward_auth;
pub mod metrics;
pub mod oidc;
pub mod pipeline;
pub mod reason;
pub mod secret;
pub mod server;
pub mod session;
pub mod trust;
pub mod websocket;
