//! The command line as a user drives it: the built `keyway` binary (and a real nginx) as child
//! processes on loopback sockets. Config validation, `check --probe`, `demo`, `run` with reloads
//! and signals, and the field failures F1 and F5 of SPEC §1.

#[path = "../support/mod.rs"]
mod support;

mod access_log;
mod check;
mod commands;
mod common;
mod demo;
mod explain;
mod lints;
mod nginx_f1;
mod oidc_secrets;
mod policy;
mod probe_f5;
mod redaction;
mod run;
