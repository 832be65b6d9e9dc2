//! Server-side sessions in Redis, so that several keyway instances share sessions and a sign-out
//! (or an OIDC back-channel logout) revokes everywhere.
//!
//! Bytes in, bytes out: the caller encrypts. Keys hold a SHA-256 of the session id, never the id,
//! so a Redis dump holds no usable cookie.
//!
//! Redis being down never hangs or stops keyway: the connection is made on first use (keyway
//! starts without Redis), every call is bounded by the store's timeout and answers
//! [`StoreError::Unavailable`], and a later call connects again once Redis is back.

use std::fmt;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, RedisResult, Script};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

const ID_LEN: usize = 32;
/// base64url without padding of 32 bytes.
const ID_TEXT_LEN: usize = 43;

/// A connection that failed in a way the manager does not repair by itself (a timeout, an
/// authentication or protocol error) is replaced on the next use, but at most this often, so a
/// Redis that refuses every new connection is not hammered by every request.
const REBUILD_AFTER: Duration = Duration::from_secs(1);

/// A session id: 32 random bytes, carried in the cookie as 43 base64url characters.
#[derive(Clone)]
pub struct SessionId {
    bytes: [u8; ID_LEN],
    text: String,
}

impl SessionId {
    pub fn generate() -> Result<SessionId, getrandom::Error> {
        let mut bytes = [0u8; ID_LEN];
        getrandom::fill(&mut bytes)?;
        Ok(SessionId {
            bytes,
            text: URL_SAFE_NO_PAD.encode(bytes),
        })
    }

    /// Only the exact text [`SessionId::generate`] makes: 43 base64url characters whose unused
    /// trailing bits are zero, so each id has one spelling.
    pub fn parse(text: &str) -> Option<SessionId> {
        if text.len() != ID_TEXT_LEN
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        let decoded = URL_SAFE_NO_PAD.decode(text).ok()?;
        let bytes: [u8; ID_LEN] = decoded.try_into().ok()?;
        Some(SessionId {
            bytes,
            text: text.to_owned(),
        })
    }

    pub fn as_text(&self) -> Secret<&str> {
        Secret::new(&self.text)
    }

    /// What Redis sees: a digest that cannot be turned back into the cookie value.
    fn digest_hex(&self) -> String {
        hex::encode(Sha256::digest(self.bytes))
    }
}

impl PartialEq for SessionId {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.ct_eq(&other.bytes).into()
    }
}

impl Eq for SessionId {}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// Proof of holding a lock from [`RedisStore::try_lock`]; give it back to
/// [`RedisStore::unlock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockToken(Secret<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Redis did not answer in time, refused the connection or answered with an error. The
    /// message names the operation and the failure, never a key, value or URL.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// `SET` the session and add its key to the index sets, extending each set's TTL to at least
/// the session's. A script rather than MULTI because "extend, never shorten" needs a condition
/// (`PEXPIRE … GT` would need Redis 7 and treats a set without TTL as infinite).
/// KEYS[1] session key, KEYS[2..] index sets; ARGV[1] value, ARGV[2] TTL in ms.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
",
    )
});

/// `SET NX PX`, and also success when the lock already holds this very token: a call retried
/// after a lost reply must not lock its own caller out.
static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
",
    )
});

/// Delete the lock only while it still holds the caller's token: an expired lock taken over by
/// another instance is not released by the first one.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Sessions in Redis under `<prefix>session:<sha256 hex>`, with index sets `<prefix>sid:<sid>`
/// and `<prefix>sub:<sub>` for back-channel logout, and locks under `<prefix>lock:<sha256 hex>`.
pub struct RedisStore {
    client: Client,
    prefix: String,
    timeout: Duration,
    conn: Mutex<Slot>,
}

/// The connection manager, made on first use: `ConnectionManager` needs a running tokio runtime,
/// which `new` (called while compiling the config) may not have.
#[derive(Default)]
struct Slot {
    current: Option<Conn>,
    generation: u64,
}

struct Conn {
    manager: ConnectionManager,
    generation: u64,
    built: Instant,
}

impl fmt::Debug for RedisStore {
    // The URL may hold a password: not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisStore {
    /// Checks the URL only; nothing connects until the first use. `timeout` bounds every call.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisStore, String> {
        // Messages never repeat the URL: it may carry a password.
        if url.starts_with("rediss://") || url.starts_with("valkeys://") {
            return Err("session.url: TLS (rediss://) is not supported".to_owned());
        }
        let client = Client::open(url).map_err(|_| {
            "session.url is not a valid Redis URL (redis://[user:password@]host[:port][/db] or redis+unix:///path)".to_owned()
        })?;
        if timeout.is_zero() {
            return Err("the session store timeout must be above zero".to_owned());
        }
        Ok(RedisStore {
            client,
            prefix: prefix.to_owned(),
            timeout,
            conn: Mutex::new(Slot::default()),
        })
    }

    /// Stores `value` for `ttl` and indexes it under `sid` and `sub` for [`RedisStore::revoke`].
    pub async fn put(
        &self,
        id: &SessionId,
        value: &[u8],
        ttl: Duration,
        sid: Option<&str>,
        sub: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut invocation = PUT.key(self.session_key(id));
        if let Some(sid) = sid {
            invocation.key(self.index_key("sid:", sid));
        }
        if let Some(sub) = sub {
            invocation.key(self.index_key("sub:", sub));
        }
        invocation.arg(value).arg(millis(ttl));
        let invocation = &invocation;
        self.run("put", move |mut c| async move {
            invocation.invoke_async::<()>(&mut c).await
        })
        .await
    }

    pub async fn get(&self, id: &SessionId) -> Result<Option<Vec<u8>>, StoreError> {
        let cmd = redis::cmd("GET").arg(self.session_key(id)).to_owned();
        let cmd = &cmd;
        self.run(
            "get",
            move |mut c| async move { cmd.query_async(&mut c).await },
        )
        .await
    }

    pub async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let cmd = redis::cmd("DEL").arg(self.session_key(id)).to_owned();
        let cmd = &cmd;
        self.run("delete", move |mut c| async move {
            cmd.query_async::<()>(&mut c).await
        })
        .await
    }

    /// Deletes every session indexed under `sid` when given, else under `sub`; returns how many
    /// existed. Neither given: nothing to match, 0.
    pub async fn revoke(&self, sid: Option<&str>, sub: Option<&str>) -> Result<usize, StoreError> {
        let index = match (sid, sub) {
            (Some(sid), _) => self.index_key("sid:", sid),
            (None, Some(sub)) => self.index_key("sub:", sub),
            (None, None) => return Ok(0),
        };
        let index = index.as_str();
        self.run("revoke", move |mut c| async move {
            let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
                .arg(index)
                .query_async(&mut c)
                .await?;
            if members.is_empty() {
                return Ok(0);
            }
            // A session added after SMEMBERS stays indexed: only the members read are removed.
            let (deleted, _): (usize, usize) = redis::pipe()
                .atomic()
                .cmd("DEL")
                .arg(&members)
                .cmd("SREM")
                .arg(index)
                .arg(&members)
                .query_async(&mut c)
                .await?;
            Ok(deleted)
        })
        .await
    }

    /// Takes the lock `name` for `ttl` unless another holder has it. `name` is hashed into the
    /// key, so it may be a session id.
    pub async fn try_lock(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<LockToken>, StoreError> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random)
            .map_err(|_| StoreError::Unavailable("lock: the system random source failed".into()))?;
        let token = hex::encode(random);
        let mut invocation = LOCK.key(self.lock_key(name));
        invocation.arg(&token).arg(millis(ttl));
        let invocation = &invocation;
        let taken: bool = self
            .run("lock", move |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        Ok(taken.then(|| LockToken(Secret::new(token))))
    }

    /// Releases the lock if `token` still holds it; `false` when it had expired or another
    /// holder has it now.
    pub async fn unlock(&self, name: &str, token: &LockToken) -> Result<bool, StoreError> {
        let mut invocation = UNLOCK.key(self.lock_key(name));
        invocation.arg(token.0.expose());
        let invocation = &invocation;
        self.run("unlock", move |mut c| async move {
            invocation.invoke_async(&mut c).await
        })
        .await
    }

    fn session_key(&self, id: &SessionId) -> String {
        format!("{}session:{}", self.prefix, id.digest_hex())
    }

    fn index_key(&self, kind: &str, value: &str) -> String {
        format!("{}{kind}{value}", self.prefix)
    }

    fn lock_key(&self, name: &str) -> String {
        format!("{}lock:{}", self.prefix, hex::encode(Sha256::digest(name)))
    }

    /// Runs `op` on the shared connection within the store's timeout.
    ///
    /// A connection refused or dropped is retried once at once: the manager has already begun a
    /// new connection, so the first call after Redis comes back succeeds instead of reporting
    /// the previous failure. Every operation is idempotent, so the retry is safe even when the
    /// first attempt reached Redis.
    ///
    /// `op` takes the manager by value (a cheap handle clone) rather than an async closure over
    /// `&mut`: the latter's futures cannot be proven `Send`, which hyper's tasks need.
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (manager, generation) = self.manager()?;
        let attempt = async {
            match op(manager.clone()).await {
                Err(e) if e.is_connection_dropped() => op(manager).await,
                result => result,
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                // The manager reconnects by itself only after a dropped connection; anything
                // else (timeout, auth, protocol) may have left it stuck on a broken one.
                if !e.is_connection_dropped() {
                    self.discard(generation);
                }
                Err(StoreError::Unavailable(format!(
                    "redis {what}: {}",
                    describe(&e)
                )))
            }
            Err(_) => {
                self.discard(generation);
                Err(StoreError::Unavailable(format!(
                    "redis {what}: no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }

    /// The current manager, made if there is none. Making one does not connect (the first
    /// command does), so the lock is held for microseconds and never across an await.
    fn manager(&self) -> Result<(ConnectionManager, u64), StoreError> {
        let mut slot = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = &slot.current {
            return Ok((conn.manager.clone(), conn.generation));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // One connection attempt per reconnect, no backoff loop: with Redis down a call
            // fails at once instead of waiting out retries, and the next call tries again.
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| StoreError::Unavailable(format!("redis connect: {}", describe(&e))))?;
        slot.generation += 1;
        let generation = slot.generation;
        slot.current = Some(Conn {
            manager: manager.clone(),
            generation,
            built: Instant::now(),
        });
        Ok((manager, generation))
    }

    /// Drops the manager of `generation` (unless already replaced, or made under
    /// [`REBUILD_AFTER`] ago) so the next call starts from a fresh connection.
    fn discard(&self, generation: u64) {
        let mut slot = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if slot
            .current
            .as_ref()
            .is_some_and(|c| c.generation == generation && c.built.elapsed() >= REBUILD_AFTER)
        {
            slot.current = None;
        }
    }
}

/// Redis wants at least 1 ms; the upper bound keeps `now + ttl` inside Redis's range.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, 1 << 46)
}

/// The kind of failure only: a redis error's text may quote a command's arguments.
fn describe(e: &RedisError) -> String {
    if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_connection_dropped() {
        "connection lost".into()
    } else if e.is_io_error() {
        "I/O error".into()
    } else if let Some(code) = e
        .code()
        .filter(|c| c.len() <= 32 && c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
    {
        format!("server error {code}")
    } else {
        format!("{:?} error", e.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::process::{Child, Command, Stdio};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A real `redis-server` on 127.0.0.1, killed on drop.
    struct RedisServer {
        port: u16,
        dir: tempfile::TempDir,
        child: Option<Child>,
    }

    impl RedisServer {
        async fn start() -> RedisServer {
            // Another process may take a free port between our probe and redis binding it.
            for _ in 0..5 {
                let mut server = RedisServer {
                    port: free_port(),
                    dir: tempfile::tempdir().unwrap(),
                    child: None,
                };
                if server.launch().await {
                    return server;
                }
            }
            panic!("redis-server did not start on a free port after 5 tries");
        }

        /// Starts on `self.port`; false when redis exits (port taken) before answering PING.
        async fn launch(&mut self) -> bool {
            let child = Command::new("redis-server")
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no", "--loglevel", "warning"])
                .arg("--dir")
                .arg(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match child {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "redis-server is not installed: the session store tests need a real Redis \
                     (apt-get install redis-server; CI installs it)"
                ),
                Err(e) => panic!("cannot run redis-server: {e}"),
            };
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(child) = &mut self.child
                    && child.try_wait().unwrap().is_some()
                {
                    self.child = None;
                    return false;
                }
                if ping(self.port).await {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
        }

        fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// Same port again; it may take a moment before the port can be bound.
        async fn restart(&mut self) {
            self.stop();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.launch().await {
                assert!(Instant::now() < deadline, "redis-server did not restart");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }

        /// A plain connection for looking at what the store wrote.
        async fn raw(&self) -> redis::aio::MultiplexedConnection {
            Client::open(self.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap()
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            self.stop();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn ping(port: u16) -> bool {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            s.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).await.ok()?;
            (&buf == b"+PONG\r\n").then_some(())
        };
        tokio::time::timeout(Duration::from_millis(500), attempt)
            .await
            .ok()
            .flatten()
            .is_some()
    }

    const TIMEOUT: Duration = Duration::from_millis(500);
    const HOUR: Duration = Duration::from_secs(3600);

    fn store(server: &RedisServer) -> RedisStore {
        RedisStore::new(&server.url(), "kw:", TIMEOUT).unwrap()
    }

    fn id() -> SessionId {
        SessionId::generate().unwrap()
    }

    fn is_unavailable<T: fmt::Debug>(r: &Result<T, StoreError>) -> bool {
        matches!(r, Err(StoreError::Unavailable(_)))
    }

    async fn poll_until<F: AsyncFn() -> bool>(what: &str, limit: Duration, f: F) {
        let deadline = Instant::now() + limit;
        while !f().await {
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn session_id_text() {
        let a = id();
        let text = a.as_text().expose().to_string();
        assert_eq!(text.len(), ID_TEXT_LEN);
        assert_eq!(SessionId::parse(&text), Some(a.clone()));
        assert_ne!(id(), a);
        assert_eq!(format!("{a:?}"), "SessionId(<redacted>)");
        assert_eq!(format!("{:?}", a.as_text()), "<redacted>");

        assert!(SessionId::parse("").is_none());
        assert!(SessionId::parse(&text[..42]).is_none());
        assert!(SessionId::parse(&format!("{text}A")).is_none());
        assert!(SessionId::parse(&format!("{}=", &text[..42])).is_none());
        assert!(SessionId::parse(&format!("+{}", &text[1..])).is_none());
        assert!(SessionId::parse(&format!("{}é", &text[..41])).is_none());
        // 43 characters carry 258 bits: the last one's two spare bits must be zero.
        let zero = "A".repeat(43);
        assert!(SessionId::parse(&zero).is_some());
        assert!(SessionId::parse(&format!("{}B", &zero[..42])).is_none());
    }

    #[test]
    fn new_checks_the_url_without_connecting_or_echoing_it() {
        // No runtime here: creating the store must not need one (nor Redis).
        let s = RedisStore::new("redis://:hunter2@127.0.0.1:1/0", "kw:", TIMEOUT).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        for bad in [
            "http://:hunter2@x/",
            "not a url hunter2",
            "rediss://:hunter2@x/",
        ] {
            let err = RedisStore::new(bad, "kw:", TIMEOUT).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert!(RedisStore::new("redis://127.0.0.1/", "kw:", Duration::ZERO).is_err());
    }

    #[tokio::test]
    async fn put_get_delete() {
        let server = RedisServer::start().await;
        let s = store(&server);
        let (a, b) = (id(), id());
        s.put(&a, b"sealed-a", HOUR, Some("sid-1"), Some("alice"))
            .await
            .unwrap();
        s.put(&b, b"sealed-b", HOUR, None, None).await.unwrap();
        assert_eq!(s.get(&a).await.unwrap().as_deref(), Some(&b"sealed-a"[..]));
        assert_eq!(s.get(&b).await.unwrap().as_deref(), Some(&b"sealed-b"[..]));
        // Overwrite.
        s.put(&b, b"sealed-b2", HOUR, None, None).await.unwrap();
        assert_eq!(s.get(&b).await.unwrap().as_deref(), Some(&b"sealed-b2"[..]));

        // Redis holds digests only, never the id.
        let mut raw = server.raw().await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut raw)
            .await
            .unwrap();
        keys.sort();
        let mut want = vec![
            format!("kw:session:{}", hex::encode(Sha256::digest(a.bytes))),
            format!("kw:session:{}", hex::encode(Sha256::digest(b.bytes))),
            "kw:sid:sid-1".to_string(),
            "kw:sub:alice".to_string(),
        ];
        want.sort();
        assert_eq!(keys, want);
        for k in &keys {
            assert!(!k.contains(a.as_text().expose()) && !k.contains(b.as_text().expose()));
        }

        s.delete(&a).await.unwrap();
        assert_eq!(s.get(&a).await.unwrap(), None);
        s.delete(&a).await.unwrap();
        assert_eq!(s.get(&b).await.unwrap().as_deref(), Some(&b"sealed-b2"[..]));
    }

    #[tokio::test]
    async fn sessions_expire_and_indexes_outlive_them() {
        let server = RedisServer::start().await;
        let s = store(&server);
        let long = id();
        s.put(&long, b"long", HOUR, Some("sid-x"), Some("bob"))
            .await
            .unwrap();
        let short = id();
        s.put(
            &short,
            b"short",
            Duration::from_millis(200),
            Some("sid-x"),
            Some("bob"),
        )
        .await
        .unwrap();
        assert!(s.get(&short).await.unwrap().is_some());

        // The short session did not shorten the index sets below the long one's TTL.
        let mut raw = server.raw().await;
        for key in ["kw:sid:sid-x", "kw:sub:bob"] {
            let pttl: i64 = redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut raw)
                .await
                .unwrap();
            assert!(pttl > 3_000_000, "{key}: {pttl}");
        }
        poll_until("short session expiry", Duration::from_secs(5), async || {
            s.get(&short).await.unwrap().is_none()
        })
        .await;
        assert!(s.get(&long).await.unwrap().is_some());

        // A fresh index set takes the session's TTL.
        let only = id();
        s.put(&only, b"x", Duration::from_secs(60), None, Some("carol"))
            .await
            .unwrap();
        let pttl: i64 = redis::cmd("PTTL")
            .arg("kw:sub:carol")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!((50_000..=60_000).contains(&pttl), "{pttl}");
    }

    #[tokio::test]
    async fn revoke_by_sid_and_sub_across_instances() {
        let server = RedisServer::start().await;
        // Two keyway instances sharing one Redis, and a third deployment under another prefix.
        let (one, two) = (store(&server), store(&server));
        let other = RedisStore::new(&server.url(), "other:", TIMEOUT).unwrap();
        let (a1, a2, a3, b1, o1) = (id(), id(), id(), id(), id());
        one.put(&a1, b"a1", HOUR, Some("sid-a1"), Some("alice"))
            .await
            .unwrap();
        two.put(&a2, b"a2", HOUR, Some("sid-a2"), Some("alice"))
            .await
            .unwrap();
        one.put(&a3, b"a3", HOUR, None, Some("alice"))
            .await
            .unwrap();
        two.put(&b1, b"b1", HOUR, Some("sid-b1"), Some("bob"))
            .await
            .unwrap();
        other
            .put(&o1, b"o1", HOUR, Some("sid-a1"), Some("alice"))
            .await
            .unwrap();

        // By sid (the sub is ignored when a sid is given): only a1, wherever it was written.
        assert_eq!(two.revoke(Some("sid-a1"), Some("alice")).await.unwrap(), 1);
        assert_eq!(one.get(&a1).await.unwrap(), None);
        assert!(two.get(&a2).await.unwrap().is_some());
        assert!(one.get(&a3).await.unwrap().is_some());
        assert_eq!(two.revoke(Some("sid-a1"), None).await.unwrap(), 0);

        // By sub: alice's remaining two, not bob's, not the other prefix's.
        assert_eq!(one.revoke(None, Some("alice")).await.unwrap(), 2);
        for gone in [&a2, &a3] {
            assert_eq!(one.get(gone).await.unwrap(), None);
            assert_eq!(two.get(gone).await.unwrap(), None);
        }
        assert!(one.get(&b1).await.unwrap().is_some());
        assert!(other.get(&o1).await.unwrap().is_some());

        assert_eq!(one.revoke(None, Some("nobody")).await.unwrap(), 0);
        assert_eq!(one.revoke(None, None).await.unwrap(), 0);

        // A session that ended by itself is not counted.
        two.delete(&b1).await.unwrap();
        assert_eq!(one.revoke(Some("sid-b1"), None).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn lock_is_exclusive() {
        let server = RedisServer::start().await;
        let (one, two) = (store(&server), store(&server));
        let session = id();
        let name = session.as_text();
        let token = one.try_lock(name.expose(), HOUR).await.unwrap().unwrap();
        assert_eq!(format!("{token:?}"), "LockToken(<redacted>)");
        assert_eq!(two.try_lock(name.expose(), HOUR).await.unwrap(), None);

        // A token of another lock does not release this one.
        let wrong = two.try_lock("another", HOUR).await.unwrap().unwrap();
        assert!(!two.unlock(name.expose(), &wrong).await.unwrap());
        assert_eq!(two.try_lock(name.expose(), HOUR).await.unwrap(), None);

        assert!(one.unlock(name.expose(), &token).await.unwrap());
        assert!(!one.unlock(name.expose(), &token).await.unwrap());
        let taken = two.try_lock(name.expose(), HOUR).await.unwrap().unwrap();
        assert_ne!(taken, token);

        // The lock name reaches Redis hashed.
        let mut raw = server.raw().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(keys.iter().all(|k| !k.contains(name.expose())), "{keys:?}");

        // A lock ends with its TTL.
        let brief = one
            .try_lock("brief", Duration::from_millis(100))
            .await
            .unwrap();
        assert!(brief.is_some());
        poll_until("lock expiry", Duration::from_secs(5), async || {
            two.try_lock("brief", HOUR).await.unwrap().is_some()
        })
        .await;
    }

    /// Every call while Redis is down: `Unavailable`, quickly, with no secret in the message.
    async fn assert_all_unavailable(s: &RedisStore, session: &SessionId, token: &LockToken) {
        let limit = TIMEOUT + Duration::from_secs(1);
        macro_rules! check {
            ($call:expr) => {{
                let started = Instant::now();
                let result = $call.await;
                let took = started.elapsed();
                assert!(is_unavailable(&result), "{}: {result:?}", stringify!($call));
                assert!(took < limit, "{} took {took:?}", stringify!($call));
                let shown = format!("{result:?}");
                assert!(!shown.contains(session.as_text().expose()), "{shown}");
            }};
        }
        check!(s.put(session, b"v", HOUR, Some("sid"), Some("sub")));
        check!(s.get(session));
        check!(s.delete(session));
        check!(s.revoke(Some("sid"), None));
        check!(s.revoke(None, Some("sub")));
        check!(s.try_lock("name", HOUR));
        check!(s.unlock("name", token));
    }

    #[tokio::test]
    async fn redis_down_is_unavailable_then_recovers() {
        let mut server = RedisServer::start().await;
        let s = store(&server);
        let session = id();
        s.put(&session, b"before", HOUR, None, None).await.unwrap();
        let token = s.try_lock("name", HOUR).await.unwrap().unwrap();

        server.stop();
        for _ in 0..3 {
            assert_all_unavailable(&s, &session, &token).await;
        }

        let restarted = Instant::now();
        server.restart().await;
        // The very next use works: no stale failure is reported after Redis is back.
        s.put(&session, b"after", HOUR, None, None).await.unwrap();
        assert_eq!(
            s.get(&session).await.unwrap().as_deref(),
            Some(&b"after"[..])
        );
        eprintln!("recovered {:?} after restart", restarted.elapsed());
    }

    #[tokio::test]
    async fn keyway_starts_before_redis() {
        let port = free_port();
        let s = RedisStore::new(&format!("redis://127.0.0.1:{port}/"), "kw:", TIMEOUT).unwrap();
        let session = id();
        let token = LockToken(Secret::new("0".repeat(32)));
        assert_all_unavailable(&s, &session, &token).await;

        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        assert!(server.launch().await, "port {port} was taken meanwhile");
        s.put(&session, b"v", HOUR, None, None).await.unwrap();
        assert_eq!(s.get(&session).await.unwrap().as_deref(), Some(&b"v"[..]));
    }

    /// A peer that accepts connections and never answers (a hung Redis, a black-holed network):
    /// the timeout still bounds every call.
    #[tokio::test]
    async fn silent_peer_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let s = RedisStore::new(&format!("redis://127.0.0.1:{port}/"), "kw:", TIMEOUT).unwrap();
        let session = id();
        let token = LockToken(Secret::new("0".repeat(32)));
        assert_all_unavailable(&s, &session, &token).await;
        hold.abort();
    }

    #[test]
    fn futures_are_send() {
        fn send<T: Send>(_: &T) {}
        let s = RedisStore::new("redis://127.0.0.1:1/", "kw:", TIMEOUT).unwrap();
        let session = id();
        send(&s.put(&session, b"", HOUR, None, None));
        send(&s.get(&session));
        send(&s.revoke(None, None));
        send(&s.try_lock("x", HOUR));
    }
}
