//! The admin listener (SPEC §10, §11): the decision log, `POST /explain`, the metrics keyway
//! adds for operations, the admin token, and the decision page in a real browser.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/jwt.rs"]
mod jwt_support;

mod api;
mod page;
