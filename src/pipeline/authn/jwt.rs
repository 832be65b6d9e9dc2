//! The `jwt` authenticator (SPEC §5, §1 F2).
//!
//! Two modes. Consumer mode (the APISIX model): the claim `consumer_claim` (default `key`)
//! names a consumer, whose own secret or public key and algorithm verify the token. Issuer mode
//! (the Envoy model): any token from one issuer, verified with `secret`, `keys_file` (PEM or
//! JWKS) or `jwks_url`.
//!
//! Verification order, each step with its own reason: structure (`token`), key selection with
//! the algorithm bound to the key (`alg` checked before any cryptography), the signature
//! (jsonwebtoken's crypto, used only as a primitive), then the claims (`claims`). Successful
//! results go to a per-authenticator cache (`cache`) whose hits re-check the time claims.

mod cache;
pub mod claims;
mod compile;
pub mod jwks;
pub mod keys;
pub mod token;

/// Config → `JwtAuth`.
pub use self::compile::{compile, compile_claim_headers};

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use self::cache::{Cache, Entry};
use self::claims::{ClaimError, TimeRules, Times};
use self::jwks::{Jwks, Refetch};
use self::keys::{VerifyKey, alg_name};
use self::token::{Parsed, show};
use super::Identity;
use super::source::Source;
use crate::pipeline::refusal::Refusal;
use crate::pipeline::runtime::Consumer;
use crate::reason::Reason;
use crate::secret::Secret;

/// Verified tokens remembered per authenticator.
const CACHE_CAPACITY: usize = 10_000;

/// How a provider's tokens become an identity (`JwtAuth::for_provider`).
#[derive(Debug)]
pub struct ProviderClaims {
    pub identity_claim: String,
    /// A claim name or a dotted path (`realm_access.roles`).
    pub groups_claim: String,
    pub to_headers: Vec<(String, HeaderName)>,
    pub leeway: std::time::Duration,
    /// Back-channel logout tokens need not carry `exp`.
    pub require_exp: bool,
    /// Verified tokens remembered (0 for tokens verified once, such as ID tokens).
    pub cache: usize,
}

#[derive(Debug)]
pub struct JwtAuth {
    name: Arc<str>,
    /// `name` as the X-Keyway-Authenticator value.
    name_header: Option<HeaderValue>,
    sources: Vec<Source>,
    mode: Box<Mode>,
    rules: TimeRules,
    issuer: Option<String>,
    audience: Vec<String>,
    /// Consumer mode: `None` makes the consumer's name the subject.
    identity_claim: Option<String>,
    groups_claim: String,
    claims_to_headers: Vec<(String, HeaderName)>,
    cache: Cache,
}

/// A claim a token must carry (see `JwtAuth::required_claims`).
pub struct RequiredClaim<'a> {
    pub claim: &'a str,
    pub setting: &'static str,
    pub role: &'static str,
    pub reason: Reason,
}

#[derive(Debug)]
enum Mode {
    Consumer {
        claim: String,
        consumers: HashMap<String, ConsumerKey>,
    },
    Static {
        keys: Vec<VerifyKey>,
        /// Where the keys came from, for details ("keys_file jwks.json").
        origin: String,
    },
    Remote(Arc<Jwks>),
}

#[derive(Debug)]
struct ConsumerKey {
    consumer: Arc<Consumer>,
    key: VerifyKey,
}

impl JwtAuth {
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    pub fn header_names(&self) -> Vec<String> {
        self.claims_to_headers
            .iter()
            .map(|(_, h)| h.as_str().to_owned())
            .collect()
    }

    /// False until a `jwks_url`'s first successful fetch.
    pub fn is_ready(&self) -> bool {
        match &*self.mode {
            Mode::Remote(jwks) => {
                jwks.start();
                jwks.current().is_some()
            }
            _ => true,
        }
    }

    /// An issuer-mode verifier for the tokens an OpenID provider signs (ID tokens, logout
    /// tokens): the provider's JWKS, its issuer, and the client id as the audience. The same
    /// code verifies them as any issuer's token, with the same reasons.
    pub fn for_provider(
        name: &Arc<str>,
        jwks: Arc<Jwks>,
        issuer: &str,
        client_id: &str,
        claims: ProviderClaims,
    ) -> JwtAuth {
        JwtAuth {
            name: name.clone(),
            name_header: super::name_header(name),
            sources: Vec::new(),
            mode: Box::new(Mode::Remote(jwks)),
            rules: TimeRules {
                leeway: claims.leeway.as_secs_f64(),
                require_exp: claims.require_exp,
                max_lifetime: None,
            },
            issuer: Some(issuer.to_owned()),
            audience: vec![client_id.to_owned()],
            identity_claim: Some(claims.identity_claim),
            groups_claim: claims.groups_claim,
            claims_to_headers: claims.to_headers,
            cache: Cache::new(claims.cache),
        }
    }

    /// The remote key set, when the keys come from `jwks_url` (explain names it).
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        match &*self.mode {
            Mode::Remote(jwks) => Some(jwks),
            _ => None,
        }
    }

    /// The claims a token must carry to be accepted here, each with the setting that names it
    /// and the refusal its absence gets: `check --token` reads this, so it cannot disagree
    /// with `verify` about the mode.
    pub fn required_claims(&self) -> Vec<RequiredClaim<'_>> {
        let mut out = Vec::new();
        if let Mode::Consumer { claim, .. } = &*self.mode {
            out.push(RequiredClaim {
                claim,
                setting: "consumer_claim",
                role: "to pick the consumer",
                reason: Reason::JwtConsumerClaimMissing,
            });
        }
        if let Some(claim) = &self.identity_claim {
            out.push(RequiredClaim {
                claim,
                setting: "identity_claim",
                role: "as the identity",
                reason: Reason::JwtClaimMissing,
            });
        }
        out
    }

    /// Verified-token cache hits and misses so far (for `/metrics`).
    pub fn cache_counts(&self) -> (u64, u64) {
        self.cache.counts()
    }

    /// Why the keys are not loaded (the last JWKS fetch error).
    pub fn last_error(&self) -> Option<String> {
        match &*self.mode {
            Mode::Remote(jwks) => jwks.last_error(),
            _ => None,
        }
    }

    /// Starts background work (the JWKS refresher) when called inside a tokio runtime.
    pub fn start(&self) {
        if let Mode::Remote(jwks) = &*self.mode {
            jwks.start();
        }
    }

    pub async fn verify(&self, token: Secret<&str>) -> Result<Identity, Refusal> {
        let token = *token.expose();
        if token.len() > token::MAX_TOKEN_BYTES {
            // Refused before hashing or decoding anything.
            return Err(self.parse_refusal(token));
        }
        let now = claims::now();
        let key = cache::hash(token);
        if let Some(hit) = self.cache.get(&key)
            && hit.generation == self.generation()
        {
            self.cache.counted(true);
            return match claims::check_times(&hit.times, &self.rules, now) {
                Ok(()) => Ok(self.until((*hit.identity).clone(), &hit.times)),
                Err(e) => {
                    self.cache.remove(&key);
                    Err(refusal(e))
                }
            };
        }
        self.cache.counted(false);
        let (identity, times, generation) = self.verify_uncached(token, now).await?;
        let identity = Arc::new(identity);
        self.cache.insert(
            key,
            Entry {
                identity: identity.clone(),
                times,
                generation,
            },
            now,
        );
        Ok(self.until(Arc::unwrap_or_clone(identity), &times))
    }

    /// The identity, valid until `exp` plus the leeway (when the token has an `exp`).
    fn until(&self, mut identity: Identity, times: &Times) -> Identity {
        identity.valid_until = times
            .exp
            .map(|exp| (exp + self.rules.leeway).max(0.0) as u64);
        identity
    }

    fn generation(&self) -> u64 {
        match &*self.mode {
            Mode::Remote(jwks) => jwks.generation(),
            _ => 0,
        }
    }

    fn parse_refusal(&self, token: &str) -> Refusal {
        match token::parse(token) {
            Err(e) => Refusal::new(e.reason, e.detail),
            Ok(_) => Refusal::new(Reason::JwtMalformed, "The token is malformed."),
        }
    }

    async fn verify_uncached(
        &self,
        token: &str,
        now: f64,
    ) -> Result<(Identity, Times, u64), Refusal> {
        let parsed = token::parse(token).map_err(|e| {
            let hint = match e.reason {
                Reason::JwtAlgNotAllowed => Some("Sign tokens with the algorithm configured for the key."),
                Reason::JwtEmbeddedKey => Some("Remove the key from the token header; keyway verifies with the keys in its config."),
                _ => None,
            };
            let r = Refusal::new(e.reason, e.detail);
            match hint {
                Some(h) => r.hint(h),
                None => r,
            }
        })?;
        let ((identity, times), generation) = match &*self.mode {
            Mode::Consumer { claim, consumers } => {
                let ck = self.consumer_key(claim, consumers, &parsed)?;
                let label = format!("the key of consumer {}", ck.consumer.name);
                verify_with(&parsed, &[&ck.key], &label)?;
                let times = self.check_claims(&parsed.claims, now)?;
                (self.consumer_identity(ck, parsed.claims, times)?, 0)
            }
            Mode::Static { keys, origin } => {
                let candidates = select(keys, &parsed, origin).map_err(Miss::into_refusal)?;
                verify_with(&parsed, &candidates, origin)?;
                let times = self.check_claims(&parsed.claims, now)?;
                (self.issuer_identity(parsed.claims, times)?, 0)
            }
            Mode::Remote(jwks) => {
                let generation = self.verify_remote(jwks, &parsed).await?;
                let times = self.check_claims(&parsed.claims, now)?;
                (self.issuer_identity(parsed.claims, times)?, generation)
            }
        };
        Ok((identity, times, generation))
    }

    /// Finds the key in the fetched set, refetching once on an unknown `kid`.
    async fn verify_remote(&self, jwks: &Arc<Jwks>, parsed: &Parsed<'_>) -> Result<u64, Refusal> {
        let Some(mut set) = jwks.get_or_fetch().await else {
            let why = jwks
                .last_error()
                .map_or_else(String::new, |e| format!(" Last error: {e}."));
            return Err(Refusal::new(
                Reason::JwtKeysUnavailable,
                format!(
                    "The signing keys of {} have not been fetched yet, so no token can be verified.{why}",
                    jwks.label
                ),
            )
            .hint("Check that the JWKS endpoint is reachable from keyway; keyway retries in the background."));
        };
        let origin = format!("the JWKS of {}", jwks.label);
        let candidates = match select(&set.keys, parsed, &origin) {
            Ok(c) => c,
            Err(Miss::UnknownKid(_)) => {
                if let Refetch::Fetched(newer) = jwks.refetch_for_unknown_kid(set.generation).await
                {
                    set = newer;
                }
                select(&set.keys, parsed, &origin).map_err(Miss::into_refusal)?
            }
            Err(other) => return Err(other.into_refusal()),
        };
        verify_with(parsed, &candidates, &origin)?;
        Ok(set.generation)
    }

    fn consumer_key<'c>(
        &self,
        claim: &str,
        consumers: &'c HashMap<String, ConsumerKey>,
        parsed: &Parsed<'_>,
    ) -> Result<&'c ConsumerKey, Refusal> {
        let Some(value) = parsed.claims.get(claim) else {
            let present = claim_names(&parsed.claims);
            let suggestion = suggest_claim(&parsed.claims);
            return Err(Refusal::new(
                Reason::JwtConsumerClaimMissing,
                format!(
                    "The token has no claim \"{claim}\"; authenticator {} picks the consumer by that claim. Claims present: {}.",
                    self.name,
                    if present.is_empty() { "none".to_owned() } else { present }
                ),
            )
            .hint(format!(
                "Add a \"{claim}\" claim naming the consumer, or set consumer_claim: {suggestion} on authenticator {}.",
                self.name
            )));
        };
        let Some(wanted) = claims::as_name(value) else {
            return Err(Refusal::new(
                Reason::JwtClaimInvalid,
                format!(
                    "The token's \"{claim}\" claim is {}; it must be a non-empty string naming a consumer.",
                    token::type_name(value)
                ),
            ));
        };
        consumers.get(&wanted).ok_or_else(|| {
            Refusal::new(
                Reason::JwtConsumerUnknown,
                format!(
                    "The token's \"{claim}\" claim is {}, which names no consumer with a jwt credential.",
                    show(&wanted)
                ),
            )
            .hint(format!(
                "Set consumers[].jwt.key to this value for the consumer it belongs to, or check consumer_claim on authenticator {}.",
                self.name
            ))
        })
    }

    /// Time claims, issuer and audience. Returns the times for the cache.
    fn check_claims(&self, c: &Map<String, Value>, now: f64) -> Result<Times, Refusal> {
        let times = claims::times(c).map_err(refusal)?;
        claims::check_times(&times, &self.rules, now).map_err(refusal)?;
        if let Some(iss) = &self.issuer {
            claims::check_issuer(c, iss).map_err(refusal)?;
        }
        if !self.audience.is_empty() {
            claims::check_audience(c, &self.audience).map_err(refusal)?;
        }
        Ok(times)
    }

    fn consumer_identity(
        &self,
        ck: &ConsumerKey,
        claims: Map<String, Value>,
        times: Times,
    ) -> Result<(Identity, Times), Refusal> {
        let subject = match &self.identity_claim {
            Some(name) => self.subject_from(&claims, name)?.into(),
            None => ck.consumer.name.clone(),
        };
        let headers = self.mapped_headers(&claims)?;
        Ok((
            Identity {
                subject,
                consumer: Some(ck.consumer.clone()),
                groups: ck.consumer.groups.clone(),
                authenticator: self.name.clone(),
                authenticator_header: self.name_header.clone(),
                claims: Some(Arc::new(claims)),
                headers,
                valid_until: None,
            },
            times,
        ))
    }

    fn issuer_identity(
        &self,
        claims: Map<String, Value>,
        times: Times,
    ) -> Result<(Identity, Times), Refusal> {
        let name = self.identity_claim.as_deref().unwrap_or("sub");
        let subject = self.subject_from(&claims, name)?.into();
        let groups = match claims::at_path(&claims, &self.groups_claim) {
            Some(v) => claims::groups(v, &self.groups_claim).map_err(refusal)?,
            None => Vec::new(),
        };
        let headers = self.mapped_headers(&claims)?;
        Ok((
            Identity {
                subject,
                consumer: None,
                groups: Arc::from(groups),
                authenticator: self.name.clone(),
                authenticator_header: self.name_header.clone(),
                claims: Some(Arc::new(claims)),
                headers,
                valid_until: None,
            },
            times,
        ))
    }

    fn subject_from(&self, claims: &Map<String, Value>, name: &str) -> Result<String, Refusal> {
        match claims.get(name) {
            Some(v) => claims::as_name(v).ok_or_else(|| {
                Refusal::new(
                    Reason::JwtClaimInvalid,
                    format!(
                        "The token's \"{name}\" claim (identity_claim) is {}; it must be a non-empty string.",
                        token::type_name(v)
                    ),
                )
            }),
            None => Err(Refusal::new(
                Reason::JwtClaimMissing,
                format!(
                    "The token has no \"{name}\" claim, which authenticator {} uses as the identity. Claims present: {}.",
                    self.name,
                    claim_names(claims)
                ),
            )
            .hint(format!(
                "Set identity_claim on authenticator {} to a claim the tokens carry.",
                self.name
            ))),
        }
    }

    /// `claims_to_headers`. A mapped claim the token lacks still yields the header, empty, so a
    /// client-sent value of that name never reaches the upstream.
    fn mapped_headers(
        &self,
        claims: &Map<String, Value>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Refusal> {
        let mut out = Vec::with_capacity(self.claims_to_headers.len());
        for (claim, header) in &self.claims_to_headers {
            let text = claims
                .get(claim)
                .map(claims::header_text)
                .unwrap_or_default();
            let value = (text.len() <= 4096)
                .then(|| HeaderValue::from_str(&text).ok())
                .flatten()
                .ok_or_else(|| {
                    Refusal::new(
                        Reason::JwtClaimInvalid,
                        format!(
                            "The token's \"{claim}\" claim cannot be sent as header {header}: it has control characters or is longer than 4096 bytes."
                        ),
                    )
                })?;
            out.push((header.clone(), value));
        }
        Ok(out)
    }
}

fn refusal(e: ClaimError) -> Refusal {
    let r = Refusal::new(e.reason, e.detail);
    match e.hint {
        Some(h) => r.hint(h),
        None => r,
    }
}

/// Claim names for a detail: printable, short, at most 20.
fn claim_names(claims: &Map<String, Value>) -> String {
    let mut names: Vec<String> = claims
        .keys()
        .take(20)
        .map(|k| {
            k.chars()
                .take(40)
                .map(|c| {
                    if c.is_ascii_graphic() && c != '"' && c != '\\' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect()
        })
        .collect();
    if claims.len() > 20 {
        names.push(format!("and {} more", claims.len() - 20));
    }
    names.join(", ")
}

/// The claim to suggest for `consumer_claim`: a common identifier the token carries.
fn suggest_claim(claims: &Map<String, Value>) -> String {
    const REGISTERED: [&str; 6] = ["exp", "nbf", "iat", "iss", "aud", "jti"];
    [
        "sub",
        "user_id",
        "uid",
        "client_id",
        "azp",
        "username",
        "email",
    ]
    .iter()
    .find(|c| claims.get(**c).and_then(claims::as_name).is_some())
    .map(|c| (*c).to_owned())
    .or_else(|| {
        claims
            .iter()
            .find(|(k, v)| {
                !REGISTERED.contains(&k.as_str())
                    && claims::as_name(v).is_some()
                    && k.len() <= 40
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
            .map(|(k, _)| k.clone())
    })
    .unwrap_or_else(|| "sub".to_owned())
}

/// Why no key could be chosen.
enum Miss {
    UnknownKid(Refusal),
    Other(Refusal),
}

impl Miss {
    fn into_refusal(self) -> Refusal {
        match self {
            Miss::UnknownKid(r) | Miss::Other(r) => r,
        }
    }
}

/// The keys that may verify this token: the one its `kid` names, or without a `kid` every key
/// bound to its `alg`. A key bound to another algorithm is never tried (no HS/RS confusion).
/// When no configured key has a `kid` (a `secret`, PEM files), the token's `kid` cannot name
/// one, so it is ignored: issuers commonly set a `kid` whatever the verifier holds.
fn select<'k>(
    keys: &'k [VerifyKey],
    parsed: &Parsed<'_>,
    origin: &str,
) -> Result<Vec<&'k VerifyKey>, Miss> {
    let alg = parsed.alg;
    let keys_have_kids = keys.iter().any(|k| k.kid.is_some());
    if let Some(kid) = parsed.kid.as_ref().filter(|_| keys_have_kids) {
        let named: Vec<&VerifyKey> = keys
            .iter()
            .filter(|k| k.kid.as_ref() == Some(kid))
            .collect();
        if named.is_empty() {
            let known: Vec<String> = keys
                .iter()
                .filter_map(|k| k.kid.as_deref())
                .take(10)
                .map(show)
                .collect();
            let known = format!("its kids are {}", known.join(", "));
            return Err(Miss::UnknownKid(
                Refusal::new(
                    Reason::JwtKeyUnknown,
                    format!("The token's kid {} names no key in {origin}; {known}.", show(kid)),
                )
                .hint("The issuer may have rotated its keys; get a new token, or check which key set keyway is configured with."),
            ));
        }
        let usable: Vec<&VerifyKey> = named
            .iter()
            .copied()
            .filter(|k| k.algs.contains(&alg))
            .collect();
        if usable.is_empty() {
            return Err(Miss::Other(alg_refusal(
                alg,
                &format!("key {} of {origin}", show(kid)),
                &named[0].algs_text(),
            )));
        }
        return Ok(usable);
    }
    let usable: Vec<&VerifyKey> = keys.iter().filter(|k| k.algs.contains(&alg)).collect();
    if usable.is_empty() {
        let mut bound: Vec<Algorithm> = keys.iter().flat_map(|k| k.algs.iter().copied()).collect();
        bound.dedup();
        return Err(Miss::Other(alg_refusal(
            alg,
            &format!("the keys of {origin}"),
            &keys::names(&bound),
        )));
    }
    Ok(usable)
}

fn alg_refusal(alg: Algorithm, whose: &str, bound: &str) -> Refusal {
    Refusal::new(
        Reason::JwtAlgNotAllowed,
        format!(
            "The token's alg is {}, but {whose} {} bound to {bound}.",
            alg_name(alg),
            if whose.starts_with("the keys") {
                "are"
            } else {
                "is"
            }
        ),
    )
    .hint("Sign tokens with the algorithm configured for the key.")
}

/// Checks the token's `alg` against each key, then the signature. Success with any candidate.
fn verify_with(
    parsed: &Parsed<'_>,
    candidates: &[&VerifyKey],
    origin: &str,
) -> Result<(), Refusal> {
    let alg = parsed.alg;
    let mut length_mismatch = None;
    for key in candidates {
        if !key.algs.contains(&alg) {
            return Err(alg_refusal(alg, origin, &key.algs_text()));
        }
        if let Some(want) = key.signature_len(alg)
            && want != parsed.signature_len
        {
            length_mismatch = Some(want);
            continue;
        }
        // jsonwebtoken's crypto as a primitive: alg, key and structure are already checked.
        if let Ok(true) = jsonwebtoken::crypto::verify(
            parsed.signature_b64,
            parsed.signing_input.as_bytes(),
            &key.key,
            alg,
        ) {
            return Ok(());
        }
        length_mismatch = None;
    }
    if let Some(want) = length_mismatch {
        let note = if matches!(alg, Algorithm::ES256 | Algorithm::ES384) {
            " (JWS wants raw R‖S, not DER)"
        } else {
            ""
        };
        return Err(Refusal::new(
            Reason::JwtSignatureInvalid,
            format!(
                "An {} signature with this key is {want} bytes{note}; the token's is {}.",
                alg_name(alg),
                parsed.signature_len
            ),
        ));
    }
    Err(Refusal::new(
        Reason::JwtSignatureInvalid,
        format!(
            "The signature does not verify with {origin} ({}).",
            alg_name(alg)
        ),
    )
    .hint("The token was signed with another key, or altered after signing."))
}

#[cfg(test)]
mod tests;
