//! Encrypted, authenticated cookies: the cookie session store and the sign-in state cookie.
//!
//! [`Sealer`] encrypts with AES-256-GCM under keys derived from `session.secret` (and opens with
//! `session.old_secrets` too, so a secret can be rotated without signing everyone out).
//! [`CookieJar`] writes a value as one cookie or, past the browsers' ~4 KB cap, as numbered chunks,
//! reads it back from the request, and strips keyway's cookies before the request goes upstream.

use std::fmt;
use std::time::Duration;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use http::header::{COOKIE, Entry};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;

use crate::secret::Secret;

/// First byte of every sealed value. It also names the key derivation (the HKDF info says `v1`),
/// so a value whose version byte was altered cannot authenticate under another format.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const MIN_SECRET_LEN: usize = 32;
const HKDF_INFO: &[u8] = b"keyway session cookie v1";

/// The most bytes one `Set-Cookie` value (name, value and attributes) may take. Browsers cap a
/// cookie at 4096 bytes; the margin covers the `Set-Cookie: ` name and browsers that count
/// attributes too.
pub const MAX_SET_COOKIE: usize = 4000;

/// The most chunks [`CookieJar::read`] reassembles (about 250 KB), so a client cannot make keyway
/// collect an unbounded number of pieces.
pub const MAX_CHUNKS: usize = 64;

const MAX_NAME_LEN: usize = 128;
const MAX_PATH_LEN: usize = 256;

/// The AEAD keys: the current one, which seals, and the old ones still accepted when opening.
pub struct Keys {
    current: Aes256Gcm,
    old: Vec<Aes256Gcm>,
}

impl Keys {
    /// Keys from `session.secret` and `session.old_secrets`; each must be at least 32 bytes.
    pub fn new(current: &[u8], old: &[&[u8]]) -> Result<Keys, String> {
        let current = derive(current, "session.secret")?;
        let old = old
            .iter()
            .enumerate()
            .map(|(i, secret)| derive(secret, &format!("session.old_secrets[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Keys { current, old })
    }

    /// How many keys: one current plus the old ones.
    pub fn count(&self) -> usize {
        1 + self.old.len()
    }

    /// Current first: almost every cookie opens on the first try.
    fn all(&self) -> impl Iterator<Item = &Aes256Gcm> {
        std::iter::once(&self.current).chain(&self.old)
    }
}

/// HKDF-SHA256 turns a secret of any length (and any entropy layout, e.g. a passphrase) into a
/// uniform 256-bit AES key dedicated to this purpose.
fn derive(secret: &[u8], what: &str) -> Result<Aes256Gcm, String> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!("{what} must be at least {MIN_SECRET_LEN} bytes"));
    }
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(None, secret)
        .expand(HKDF_INFO, &mut key)
        .map_err(|_| format!("{what}: key derivation failed"))?;
    let cipher =
        Aes256Gcm::new_from_slice(&key).map_err(|_| format!("{what}: key derivation failed"));
    key.fill(0);
    cipher
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("count", &self.count())
            .finish()
    }
}

/// Seals values into cookie-safe text and opens them again.
#[derive(Debug)]
pub struct Sealer {
    keys: Keys,
}

/// A value that [`Sealer::open`] authenticated and decrypted.
pub struct Opened {
    pub plaintext: Vec<u8>,
    /// Opened with an old secret: the caller re-issues the cookie so it moves to the current one.
    pub rotated: bool,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field(
                "plaintext",
                &format_args!("<{} bytes>", self.plaintext.len()),
            )
            .field("rotated", &self.rotated)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not base64url, shorter than version, nonce and tag, or an unknown version.
    #[error("malformed sealed value")]
    Malformed,
    /// No key authenticates it: tampered, sealed under another secret or for another purpose,
    /// or truncated (a cut that leaves undecodable base64 is `Malformed`).
    #[error("sealed value does not authenticate")]
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Without a fresh random nonce AES-GCM is unsafe, so nothing is sealed.
    #[error("the system random source failed")]
    Random,
    #[error("value too long to seal")]
    TooLong,
}

impl Sealer {
    pub fn new(keys: Keys) -> Sealer {
        Sealer { keys }
    }

    /// base64url (no padding) of `version || nonce || ciphertext || tag`, under the current key.
    /// `aad` binds the value to its purpose and cookie name: it must be given again to open it.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut buf = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        buf.push(VERSION);
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(plaintext);
        let body = buf.get_mut(1 + NONCE_LEN..).ok_or(SealError::TooLong)?;
        let tag = self
            .keys
            .current
            .encrypt_in_place_detached(&Nonce::from(nonce), aad, body)
            .map_err(|_| SealError::TooLong)?;
        buf.extend_from_slice(&tag);
        Ok(URL_SAFE_NO_PAD.encode(&buf))
    }

    /// Opens a value from [`Sealer::seal`] with the current key, else with each old one.
    pub fn open(&self, value: &str, aad: &[u8]) -> Result<Opened, OpenError> {
        let raw = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| OpenError::Malformed)?;
        let (&version, rest) = raw.split_first().ok_or(OpenError::Malformed)?;
        if version != VERSION {
            return Err(OpenError::Malformed);
        }
        let (nonce, rest) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(OpenError::Malformed)?;
        let (body, tag) = rest
            .split_last_chunk::<TAG_LEN>()
            .ok_or(OpenError::Malformed)?;
        let (nonce, tag) = (Nonce::from(*nonce), Tag::from(*tag));
        let mut buf = body.to_vec();
        for (i, cipher) in self.keys.all().enumerate() {
            if i > 0 {
                // Each attempt starts from the ciphertext, whatever a failed one left behind.
                buf.copy_from_slice(body);
            }
            if cipher
                .decrypt_in_place_detached(&nonce, aad, &mut buf, &tag)
                .is_ok()
            {
                return Ok(Opened {
                    plaintext: buf,
                    rotated: i > 0,
                });
            }
        }
        Err(OpenError::Invalid)
    }
}

/// A cookie value with a byte that RFC 6265 does not allow (space, `"`, `,`, `;`, `\`, controls,
/// non-ASCII). [`Sealer::seal`] never produces one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cookie value contains a byte not allowed in a cookie")]
pub struct InvalidCookieValue;

/// One logical cookie, written as `name` or, when too long, as chunks `name_0`, `name_1`, ….
#[derive(Debug, Clone)]
pub struct CookieJar {
    name: String,
    path: String,
    secure: bool,
}

/// What [`CookieJar::read`] found.
#[derive(Debug)]
pub struct Read {
    pub value: Secret<String>,
    /// How many chunks held the value; 0 for the single form. Give it back to
    /// [`CookieJar::set`] or [`CookieJar::clear`] so stale chunks are deleted.
    pub chunks: usize,
}

impl CookieJar {
    /// `name` is an RFC 6265 token of at most 128 bytes; `path` starts with `/`, has no `;` or
    /// control bytes and is at most 256 bytes. `secure` adds the `Secure` attribute.
    ///
    /// The jar owns `name` and every `name_<digits>`: [`CookieJar::strip`] removes those too.
    pub fn new(name: &str, path: &str, secure: bool) -> Result<CookieJar, String> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || !name.bytes().all(is_tchar) {
            return Err(format!(
                "cookie name {name:?} must be 1-{MAX_NAME_LEN} token characters"
            ));
        }
        let path_ok = path.starts_with('/')
            && path.len() <= MAX_PATH_LEN
            && path.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';');
        if !path_ok {
            return Err(format!(
                "cookie path {path:?} must start with '/', be at most {MAX_PATH_LEN} bytes and have no ';' or control characters"
            ));
        }
        Ok(CookieJar {
            name: name.to_owned(),
            path: path.to_owned(),
            secure,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `Set-Cookie` values that store `value`: one cookie when it fits in
    /// [`MAX_SET_COOKIE`] bytes, else chunks. `present_chunks` is [`Read::chunks`] from this
    /// request (0 when nothing was read); chunks beyond those now written are deleted.
    pub fn set(
        &self,
        value: &str,
        max_age: Option<Duration>,
        present_chunks: usize,
    ) -> Result<Vec<HeaderValue>, InvalidCookieValue> {
        if !value.bytes().all(is_cookie_octet) {
            return Err(InvalidCookieValue);
        }
        let attrs = self.attributes(max_age.map(|d| d.as_secs()));
        let mut out = Vec::new();
        let written = if self.name.len() + 1 + value.len() + attrs.len() <= MAX_SET_COOKIE {
            out.extend(header(format!("{}={value}{attrs}", self.name)));
            0
        } else {
            // A leftover single cookie would shadow the chunks (read prefers it): delete it.
            out.extend(self.deletion(&self.name));
            let mut rest = value;
            let mut i = 0;
            while !rest.is_empty() {
                let overhead = self.name.len() + 1 + decimal_len(i) + 1 + attrs.len();
                // `new` bounds name and path, so the room is always well above zero.
                let room = MAX_SET_COOKIE.saturating_sub(overhead).max(1);
                // The value is ASCII (checked above), so every index is a char boundary.
                let Some((chunk, tail)) = rest.split_at_checked(room.min(rest.len())) else {
                    break;
                };
                out.extend(header(format!("{}_{i}={chunk}{attrs}", self.name)));
                rest = tail;
                i += 1;
            }
            i
        };
        for i in written..present_chunks {
            out.extend(self.deletion(&format!("{}_{i}", self.name)));
        }
        Ok(out)
    }

    /// Deletion cookies for `name` and its `present_chunks` chunks.
    pub fn clear(&self, present_chunks: usize) -> Vec<HeaderValue> {
        let mut out = Vec::with_capacity(1 + present_chunks);
        out.extend(self.deletion(&self.name));
        for i in 0..present_chunks {
            out.extend(self.deletion(&format!("{}_{i}", self.name)));
        }
        out
    }

    /// The value from the request's `Cookie` headers (all of them): the single cookie when
    /// present, else chunks `name_0`, `name_1`, … up to the first missing one.
    pub fn read(&self, headers: &HeaderMap) -> Option<Read> {
        let name = self.name.as_bytes();
        let mut single = None;
        // Allocated only when a chunk shows up: most requests carry the single form or nothing.
        let mut chunks: Vec<Option<&[u8]>> = Vec::new();
        for (n, v) in pairs(headers) {
            if n == name {
                // Browsers send the cookie with the most specific path first.
                if single.is_none() {
                    single = Some(v);
                }
            } else if let Some(i) = chunk_index(n, name) {
                if chunks.len() <= i {
                    chunks.resize(i + 1, None);
                }
                if let Some(slot @ None) = chunks.get_mut(i) {
                    *slot = Some(v);
                }
            }
        }
        if let Some(v) = single {
            return Some(Read {
                value: Secret::new(String::from_utf8(v.to_vec()).ok()?),
                chunks: 0,
            });
        }
        let present: Vec<&[u8]> = chunks.iter().map_while(|c| *c).collect();
        if present.is_empty() {
            return None;
        }
        let value = String::from_utf8(present.concat()).ok()?;
        Some(Read {
            value: Secret::new(value),
            chunks: present.len(),
        })
    }

    /// Removes `name` and every `name_<digits>` from the request's `Cookie` headers (a header
    /// left empty goes); returns how many cookies were removed.
    pub fn strip(&self, headers: &mut HeaderMap) -> usize {
        let name = self.name.as_bytes();
        strip_where(headers, |n| {
            n == name
                || n.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(b"_"))
                    .is_some_and(|digits| {
                        !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
                    })
        })
    }

    fn attributes(&self, max_age: Option<u64>) -> String {
        let mut attrs = format!("; Path={}; HttpOnly; SameSite=Lax", self.path);
        if self.secure {
            attrs.push_str("; Secure");
        }
        if let Some(secs) = max_age {
            attrs.push_str(&format!("; Max-Age={secs}"));
        }
        attrs
    }

    fn deletion(&self, name: &str) -> Option<HeaderValue> {
        header(format!("{name}={}", self.attributes(Some(0))))
    }
}

/// Removes every cookie whose name starts with `prefix` (the sign-in state cookies) from the
/// request's `Cookie` headers; returns how many were removed.
pub fn strip_prefixed(headers: &mut HeaderMap, prefix: &str) -> usize {
    strip_where(headers, |n| n.starts_with(prefix.as_bytes()))
}

/// The value of the first cookie named exactly `name`, across all `Cookie` headers.
pub fn read_named(headers: &HeaderMap, name: &str) -> Option<Secret<String>> {
    let (_, v) = pairs(headers).find(|(n, _)| *n == name.as_bytes())?;
    Some(Secret::new(String::from_utf8(v.to_vec()).ok()?))
}

/// Name and jar-built values are validated ASCII, so this fails only on a bug; a cookie that
/// cannot be written is then left out rather than taking the gateway down.
fn header(text: String) -> Option<HeaderValue> {
    let mut value = HeaderValue::try_from(text).ok()?;
    // Never HPACK/QPACK-indexed, and `Debug` prints `Sensitive` instead of the session.
    value.set_sensitive(true);
    Some(value)
}

fn decimal_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// `i` when `n` is `name_<i>` with `i` in canonical decimal (no leading zero) below
/// [`MAX_CHUNKS`]; `name_01` is not chunk 1, so every chunk has exactly one spelling.
fn chunk_index(n: &[u8], name: &[u8]) -> Option<usize> {
    let digits = n.strip_prefix(name)?.strip_prefix(b"_")?;
    if digits.is_empty() || digits.len() > 2 || (digits.len() > 1 && digits.first() == Some(&b'0'))
    {
        return None;
    }
    let mut i = 0usize;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        i = i * 10 + usize::from(d - b'0');
    }
    (i < MAX_CHUNKS).then_some(i)
}

/// RFC 6265 §4.1.1 cookie-octet.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// RFC 9110 tchar: the bytes of a token, which a cookie name is.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The pieces of one `Cookie` header between `;`, trimmed, empty ones skipped.
fn pieces(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    header
        .split(|&b| b == b';')
        .map(trim)
        .filter(|p| !p.is_empty())
}

/// `name` and `value` of a piece; `None` for a piece without `=` or with an empty name. A value
/// in double quotes loses one pair of them.
fn pair(piece: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut halves = piece.splitn(2, |&b| b == b'=');
    let name = trim(halves.next()?);
    let value = trim(halves.next()?);
    if name.is_empty() {
        return None;
    }
    let value = match value {
        [b'"', inner @ .., b'"'] => inner,
        v => v,
    };
    Some((name, value))
}

/// Every well-formed `name=value` pair of every `Cookie` header, in order.
fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| pieces(v.as_bytes()).filter_map(pair))
}

fn strip_where(headers: &mut HeaderMap, matches: impl Fn(&[u8]) -> bool) -> usize {
    let owned =
        |v: &HeaderValue| pieces(v.as_bytes()).any(|p| pair(p).is_some_and(|(n, _)| matches(n)));
    // Scan first: the common request carries none of these cookies and costs no allocation.
    if !headers.get_all(COOKIE).iter().any(owned) {
        return 0;
    }
    let Entry::Occupied(entry) = headers.entry(COOKIE) else {
        return 0;
    };
    let old: Vec<HeaderValue> = entry.remove_entry_mult().1.collect();
    let mut removed = 0;
    for value in old {
        if !owned(&value) {
            headers.append(COOKIE, value);
            continue;
        }
        let mut kept = Vec::with_capacity(value.len());
        for piece in pieces(value.as_bytes()) {
            if pair(piece).is_some_and(|(n, _)| matches(n)) {
                removed += 1;
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(piece);
        }
        if kept.is_empty() {
            continue;
        }
        // The kept bytes come from a valid value, so this cannot fail; if it did, dropping the
        // header is the safe side (keyway's cookie must not reach the upstream).
        if let Ok(mut rebuilt) = HeaderValue::from_bytes(&kept) {
            rebuilt.set_sensitive(value.is_sensitive());
            headers.append(COOKIE, rebuilt);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";
    const AAD: &[u8] = b"session\0keyway_session";

    fn sealer(current: &[u8], old: &[&[u8]]) -> Sealer {
        Sealer::new(Keys::new(current, old).unwrap())
    }

    fn cookie_headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// `name=value` of a Set-Cookie value.
    fn name_value(set_cookie: &HeaderValue) -> &str {
        set_cookie.to_str().unwrap().split(';').next().unwrap()
    }

    fn jar() -> CookieJar {
        CookieJar::new("keyway_session", "/", true).unwrap()
    }

    #[test]
    fn seal_open_round_trip() {
        let s = sealer(SECRET, &[]);
        let sealed = s.seal(b"hello session", AAD).unwrap();
        assert!(sealed.bytes().all(is_cookie_octet));
        let opened = s.open(&sealed, AAD).unwrap();
        assert_eq!(opened.plaintext, b"hello session");
        assert!(!opened.rotated);
        // Fresh nonce each time.
        assert_ne!(sealed, s.seal(b"hello session", AAD).unwrap());
        let empty = s.seal(b"", AAD).unwrap();
        assert_eq!(s.open(&empty, AAD).unwrap().plaintext, b"");
    }

    #[test]
    fn tampering_any_byte_fails() {
        let s = sealer(SECRET, &[]);
        let sealed = s.seal(b"some session data", AAD).unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for i in 0..raw.len() {
            let mut t = raw.clone();
            t[i] ^= 0x01;
            let err = s.open(&URL_SAFE_NO_PAD.encode(&t), AAD).unwrap_err();
            // The version byte is checked before any key; every other byte fails authentication.
            let want = if i == 0 {
                OpenError::Malformed
            } else {
                OpenError::Invalid
            };
            assert_eq!(err, want, "byte {i}");
        }
        // Truncated by one byte: still long enough, but the tag no longer matches.
        let short = URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 1]);
        assert_eq!(s.open(&short, AAD).unwrap_err(), OpenError::Invalid);
    }

    #[test]
    fn malformed_values() {
        let s = sealer(SECRET, &[]);
        assert_eq!(s.open("", AAD).unwrap_err(), OpenError::Malformed);
        assert_eq!(
            s.open("not base64!", AAD).unwrap_err(),
            OpenError::Malformed
        );
        let short = URL_SAFE_NO_PAD.encode([VERSION; 28]);
        assert_eq!(s.open(&short, AAD).unwrap_err(), OpenError::Malformed);
        let sealed = s.seal(b"x", AAD).unwrap();
        assert_eq!(
            s.open(&format!("{sealed}="), AAD).unwrap_err(),
            OpenError::Malformed
        );
    }

    #[test]
    fn another_secret_fails() {
        let sealed = sealer(SECRET, &[]).seal(b"data", AAD).unwrap();
        assert_eq!(
            sealer(OTHER, &[]).open(&sealed, AAD).unwrap_err(),
            OpenError::Invalid
        );
    }

    #[test]
    fn old_secret_opens_rotated() {
        let sealed = sealer(OTHER, &[]).seal(b"data", AAD).unwrap();
        let rotated = sealer(SECRET, &[b"a third secret of at least 32 bytes", OTHER]);
        let opened = rotated.open(&sealed, AAD).unwrap();
        assert_eq!(opened.plaintext, b"data");
        assert!(opened.rotated);
        // What the caller re-issues opens with the current key.
        let reissued = rotated.seal(&opened.plaintext, AAD).unwrap();
        assert!(!rotated.open(&reissued, AAD).unwrap().rotated);
        assert!(!sealer(SECRET, &[]).open(&reissued, AAD).unwrap().rotated);
    }

    #[test]
    fn aad_mismatch_fails() {
        let s = sealer(SECRET, &[]);
        let state = s.seal(b"state", b"state\0keyway_state_x").unwrap();
        assert_eq!(s.open(&state, AAD).unwrap_err(), OpenError::Invalid);
    }

    #[test]
    fn short_secret_refused() {
        let err = Keys::new(&SECRET[..31], &[]).unwrap_err();
        assert_eq!(err, "session.secret must be at least 32 bytes");
        let err = Keys::new(SECRET, &[OTHER, b"short"]).unwrap_err();
        assert_eq!(err, "session.old_secrets[1] must be at least 32 bytes");
        assert!(!err.contains("short"));
        assert_eq!(Keys::new(SECRET, &[OTHER]).unwrap().count(), 2);
    }

    #[test]
    fn debug_shows_no_secret() {
        let keys = Keys::new(SECRET, &[OTHER]).unwrap();
        assert_eq!(format!("{keys:?}"), "Keys { count: 2 }");
        let s = Sealer::new(keys);
        assert_eq!(format!("{s:?}"), "Sealer { keys: Keys { count: 2 } }");
        let opened = s.open(&s.seal(b"plain", AAD).unwrap(), AAD).unwrap();
        assert_eq!(
            format!("{opened:?}"),
            "Opened { plaintext: <5 bytes>, rotated: false }"
        );
        let h = cookie_headers(&["keyway_session=topsecretvalue"]);
        let read = jar().read(&h).unwrap();
        let shown = format!("{read:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert_eq!(shown, "Read { value: <redacted>, chunks: 0 }");
        let state = read_named(&h, "keyway_session").unwrap();
        assert_eq!(format!("{state:?}"), "<redacted>");
    }

    #[test]
    fn set_cookie_values_are_sensitive() {
        let set = jar().set("secretvalue", None, 2).unwrap();
        assert!(set.iter().all(HeaderValue::is_sensitive));
        assert!(!format!("{set:?}").contains("secretvalue"));
        assert!(jar().clear(1).iter().all(HeaderValue::is_sensitive));
    }

    #[test]
    fn small_value_is_one_cookie() {
        let set = jar()
            .set("abc", Some(Duration::from_secs(3600)), 0)
            .unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(
            set[0],
            "keyway_session=abc; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=3600"
        );
        let insecure = CookieJar::new("k", "/app", false).unwrap();
        assert_eq!(
            insecure.set("v", None, 0).unwrap()[0],
            "k=v; Path=/app; HttpOnly; SameSite=Lax"
        );
        assert_eq!(jar().set("a b", None, 0), Err(InvalidCookieValue));
        assert_eq!(jar().set("a;b", None, 0), Err(InvalidCookieValue));
    }

    #[test]
    fn single_form_boundary() {
        let j = jar();
        let attrs = j.attributes(Some(28800)).len();
        let fits = "a".repeat(MAX_SET_COOKIE - "keyway_session=".len() - attrs);
        let set = j.set(&fits, Some(Duration::from_secs(28800)), 0).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].len(), MAX_SET_COOKIE);
        let over = format!("{fits}a");
        let set = j.set(&over, Some(Duration::from_secs(28800)), 0).unwrap();
        // Deletion of the single form, then two chunks.
        assert_eq!(set.len(), 3);
        assert!(set.iter().all(|v| v.len() <= MAX_SET_COOKIE));
    }

    fn ten_kb() -> String {
        let s = sealer(SECRET, &[]);
        s.seal(&vec![7u8; 7600], AAD).unwrap()
    }

    #[test]
    fn large_value_is_chunked_and_read_back() {
        let j = jar();
        let value = ten_kb();
        assert!(value.len() > 10_000);
        let set = j.set(&value, Some(Duration::from_secs(28800)), 0).unwrap();
        // The first one deletes a possible single-form cookie.
        assert_eq!(
            set[0],
            "keyway_session=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0"
        );
        let chunks = &set[1..];
        assert_eq!(chunks.len(), 3);
        for (i, c) in chunks.iter().enumerate() {
            assert!(
                "Set-Cookie: ".len() + c.len() < 4096,
                "chunk {i}: {} bytes",
                c.len()
            );
            assert!(c.len() <= MAX_SET_COOKIE);
            assert!(name_value(c).starts_with(&format!("keyway_session_{i}=")));
            assert!(c.to_str().unwrap().ends_with("; Secure; Max-Age=28800"));
        }
        let pairs: Vec<&str> = chunks.iter().map(name_value).collect();

        // One header, in order.
        let read = j.read(&cookie_headers(&[&pairs.join("; ")])).unwrap();
        assert_eq!(read.chunks, 3);
        assert_eq!(read.value.expose(), &value);
        let s = sealer(SECRET, &[]);
        assert_eq!(
            s.open(read.value.expose(), AAD).unwrap().plaintext,
            vec![7u8; 7600]
        );

        // Reversed, mixed with other cookies, over several headers (HTTP/2).
        let h = cookie_headers(&[
            &format!("a=1; {}", pairs[2]),
            pairs[0],
            &format!("{}; b=2", pairs[1]),
        ]);
        let read = j.read(&h).unwrap();
        assert_eq!(read.chunks, 3);
        assert_eq!(read.value.expose(), &value);
    }

    #[test]
    fn missing_middle_chunk_reads_contiguous_prefix() {
        let j = jar();
        let value = ten_kb();
        let set = j.set(&value, None, 0).unwrap();
        let pairs: Vec<&str> = set[1..].iter().map(name_value).collect();
        let h = cookie_headers(&[&format!("{}; {}", pairs[0], pairs[2])]);
        let read = j.read(&h).unwrap();
        assert_eq!(read.chunks, 1);
        assert_eq!(read.value.expose(), &pairs[0]["keyway_session_0=".len()..]);
        // Cut mid-way through the base64 text: Malformed or Invalid, never opened.
        assert!(sealer(SECRET, &[]).open(read.value.expose(), AAD).is_err());
        // Without chunk 0 there is nothing.
        assert!(j.read(&cookie_headers(&[pairs[1]])).is_none());
    }

    #[test]
    fn read_prefers_single_form_and_parses_per_rfc6265() {
        let j = jar();
        let h = cookie_headers(&["keyway_session_0=chunk; keyway_session=single"]);
        let read = j.read(&h).unwrap();
        assert_eq!(read.value.expose(), "single");
        assert_eq!(read.chunks, 0);

        let h = cookie_headers(&["junk; =nameless; keyway_session  =  \"quoted\"  ;; other=x"]);
        assert_eq!(j.read(&h).unwrap().value.expose(), "quoted");

        // Non-canonical chunk names are not chunks.
        let h = cookie_headers(&["keyway_session_00=a; keyway_session_x=b"]);
        assert!(j.read(&h).is_none());
        assert!(j.read(&HeaderMap::new()).is_none());

        let h = cookie_headers(&["a=1", "keyway_state_abc=\"s1\"; keyway_state_abc=s2"]);
        assert_eq!(read_named(&h, "keyway_state_abc").unwrap().expose(), "s1");
        assert!(read_named(&h, "keyway_state").is_none());
    }

    #[test]
    fn shrinking_emits_deletions() {
        let j = jar();
        let value = ten_kb();
        // Three chunks before, one cookie now: all three chunks deleted.
        let set = j.set("small", None, 3).unwrap();
        let texts: Vec<&str> = set.iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(
            texts,
            [
                "keyway_session=small; Path=/; HttpOnly; SameSite=Lax; Secure",
                "keyway_session_0=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0",
                "keyway_session_1=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0",
                "keyway_session_2=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0",
            ]
        );
        // Five chunks before, three now: chunks 3 and 4 deleted.
        let set = j.set(&value, None, 5).unwrap();
        let names: Vec<&str> = set.iter().map(name_value).collect();
        assert_eq!(names.len(), 6);
        assert_eq!(names[0], "keyway_session=");
        assert_eq!(&names[4..], ["keyway_session_3=", "keyway_session_4="]);
        assert!(set[4].to_str().unwrap().ends_with("Max-Age=0"));

        let cleared = j.clear(2);
        let names: Vec<&str> = cleared.iter().map(name_value).collect();
        assert_eq!(
            names,
            ["keyway_session=", "keyway_session_0=", "keyway_session_1="]
        );
        assert!(
            cleared
                .iter()
                .all(|v| v.to_str().unwrap().ends_with("; Max-Age=0"))
        );
    }

    #[test]
    fn strip_keeps_other_cookies_byte_exact() {
        let j = jar();
        let mut h = cookie_headers(&[
            "a=1;keyway_session=x;  b = \"two words\" ; keyway_session_0=y; c",
            "keyway_session_1=z; keyway_sessionx=keep; keyway_session_=keep2",
            "untouched=1;d=4",
        ]);
        assert_eq!(j.strip(&mut h), 3);
        let left: Vec<&str> = h
            .get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            left,
            [
                "a=1; b = \"two words\"; c",
                "keyway_sessionx=keep; keyway_session_=keep2",
                "untouched=1;d=4",
            ]
        );
        // Nothing left: the header goes.
        let mut h = cookie_headers(&["keyway_session_0=a; keyway_session_1=b", "keyway_session=c"]);
        h.insert(http::header::HOST, HeaderValue::from_static("h"));
        assert_eq!(j.strip(&mut h), 3);
        assert!(h.get(COOKIE).is_none());
        assert_eq!(h.len(), 1);
        // No cookie of ours: untouched.
        let mut h = cookie_headers(&["a=1;b=2", "c=3"]);
        let before = h.clone();
        assert_eq!(j.strip(&mut h), 0);
        assert_eq!(h, before);
    }

    #[test]
    fn strip_prefixed_removes_state_cookies() {
        let mut h = cookie_headers(&[
            "keyway_state_a=1; keep=1; keyway_state_b=2",
            "keyway_state_c=3",
        ]);
        assert_eq!(strip_prefixed(&mut h, "keyway_state_"), 3);
        let left: Vec<&HeaderValue> = h.get_all(COOKIE).iter().collect();
        assert_eq!(left, ["keep=1"]);
    }

    #[test]
    fn jar_validates_name_and_path() {
        assert!(CookieJar::new("", "/", true).is_err());
        assert!(CookieJar::new("a b", "/", true).is_err());
        assert!(CookieJar::new("a;b", "/", true).is_err());
        assert!(CookieJar::new("ok", "no-slash", true).is_err());
        assert!(CookieJar::new("ok", "/a;Domain=evil", true).is_err());
        assert!(CookieJar::new("ok", &format!("/{}", "a".repeat(300)), true).is_err());
        assert!(CookieJar::new("__Host-keyway", "/", true).is_ok());
    }
}
