//! Browser sessions: encrypted cookies and the Redis session store.

pub mod cookie;
pub mod redis;
pub mod store;

pub use self::cookie::{
    CookieJar, InvalidCookieValue, Keys, OpenError, Opened, Read, SealError, Sealer, read_named,
    strip_prefixed,
};
pub use self::redis::{LockToken, RedisStore, SessionId, StoreError};
