//! Browser sessions: encrypted cookies.

pub mod cookie;

pub use self::cookie::{
    CookieJar, InvalidCookieValue, Keys, OpenError, Opened, Read, SealError, Sealer, read_named,
    strip_prefixed,
};
