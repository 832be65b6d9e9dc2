//! The YAML file as serde structs. Never used at request time: `compile` turns it into `Runtime`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::types::{Dur, OneOrMany, SecretText, Text};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "keyway configuration")]
pub struct FileConfig {
    /// Address or list of addresses to serve on.
    #[schemars(with = "Option<OneOrMany<Text>>")]
    pub listen: Option<Spanned<OneOrMany<Text>>>,
    #[schemars(with = "Option<TlsFile>")]
    pub tls: Option<Spanned<TlsFile>>,
    /// `auto` (one per core) or a number of runtime worker threads.
    #[schemars(with = "Option<Workers>")]
    pub workers: Option<Spanned<Workers>>,
    pub admin: Option<AdminFile>,
    #[serde(default)]
    pub headers: HeadersFile,
    /// Peers whose X-Forwarded-* / X-Original-* headers are believed (CIDRs).
    #[schemars(with = "Option<Vec<Text>>")]
    pub trusted_proxies: Option<Spanned<Vec<Text>>>,
    #[serde(default)]
    pub errors: ErrorsFile,
    /// One JSON access-log line per request: `true` (stderr, the default), `false`, or
    /// `{path: FILE}` (appended to; SIGUSR1 reopens it).
    #[schemars(with = "Option<AccessLogFile>")]
    pub access_log: Option<Spanned<AccessLogFile>>,
    #[serde(default)]
    pub limits: LimitsFile,
    /// How path spellings that upstreams read differently are treated.
    #[serde(default)]
    pub paths: PathsFile,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, UpstreamFile>")]
    pub upstreams: BTreeMap<String, Spanned<UpstreamFile>>,
    #[serde(default)]
    #[schemars(with = "Vec<ConsumerFile>")]
    pub consumers: Vec<Spanned<ConsumerFile>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, AuthenticatorFile>")]
    pub authenticators: BTreeMap<String, Spanned<AuthenticatorFile>>,
    #[serde(default)]
    #[schemars(with = "Vec<RouteFile>")]
    pub routes: Vec<Spanned<RouteFile>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: Text,
    pub key: Text,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Workers {
    Count(usize),
    Auto(Text),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    #[schemars(with = "Text")]
    pub listen: Spanned<Text>,
    /// When set, admin endpoints (but /healthz and /readyz) require it as a bearer token.
    pub token: Option<SecretText>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnderscorePolicy {
    #[default]
    Pass,
    Drop,
    Reject,
    Normalize,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadersFile {
    #[serde(default)]
    pub underscores: UnderscorePolicy,
    /// Exact header names exempt from drop/reject/normalize.
    #[serde(default)]
    pub allow: Vec<Text>,
    /// Total bytes of request header names and values (default 65536).
    pub max_request_header_bytes: Option<usize>,
    /// Number of request headers (default 100).
    pub max_request_headers: Option<usize>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Time a client has to send a complete request head (default 10s): stops slowloris.
    pub header_read_timeout: Option<Dur>,
    /// Time to drain in-flight requests on shutdown (default 30s).
    pub shutdown_grace: Option<Dur>,
}

/// `reject` (400) or `keep` (route and forward as sent).
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SpellingFile {
    #[default]
    Reject,
    Keep,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathsFile {
    /// `%2F`, `%5C` and raw `\` in a path: reject (400 path.encoded_slash, default) or keep.
    #[serde(default)]
    pub encoded_slashes: SpellingFile,
    /// `;` in a path: reject (400 path.semicolon, default) or keep.
    #[serde(default)]
    pub semicolons: SpellingFile,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DetailLevel {
    #[default]
    Full,
    Reason,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorsFile {
    #[serde(default)]
    pub detail: DetailLevel,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub url: Option<Text>,
    /// `echo`: reflects method, path, query, headers and identity as JSON.
    pub builtin: Option<Text>,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    /// Headers keyway sets on every request to this upstream (values are secrets).
    #[serde(default)]
    pub inject: BTreeMap<String, SecretText>,
    /// Path `keyway check --probe` requests (default `/`).
    pub probe_path: Option<Text>,
    /// For an `https://` url: whom to trust and which name the certificate must carry.
    pub tls: Option<UpstreamTlsFile>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// PEM file of the CAs the upstream's certificate must chain to (relative to the config
    /// file's folder); default: the system's CA store.
    pub ca: Option<Text>,
    /// The name the certificate must carry, also sent as SNI; default: the url's host.
    pub server_name: Option<Text>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    pub connect: Option<Dur>,
    pub request: Option<Dur>,
    pub idle: Option<Dur>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerFile {
    pub name: Text,
    #[serde(default)]
    pub groups: Vec<Text>,
    /// `sha256:<hex>` hashes (see `keyway hash-key`); plaintext is accepted with a warning.
    #[serde(default)]
    pub api_keys: Vec<SecretText>,
    pub jwt: Option<ConsumerJwtFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerJwtFile {
    /// The value of the token's consumer claim that selects this consumer.
    pub key: Text,
    pub secret: Option<SecretText>,
    pub base64_secret: Option<SecretText>,
    pub public_key_file: Option<Text>,
    pub private_key_file: Option<Text>,
    /// Default HS256.
    pub algorithm: Option<Text>,
}

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthenticatorType {
    ApiKey,
    Jwt,
    Oidc,
}

/// One struct for every authenticator type, so unknown keys are reported with their line;
/// `compile` refuses keys that do not belong to the `type`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthenticatorFile {
    #[serde(rename = "type")]
    pub kind: AuthenticatorType,
    /// api_key: the header carrying the key (its hyphen twin is accepted too).
    pub header: Option<Text>,
    /// Credential sources: `header:NAME`, `query:NAME`, `cookie:NAME`.
    pub from: Option<Vec<Text>>,
    /// jwt: the claim naming the consumer (consumer mode; default `key`).
    pub consumer_claim: Option<Text>,
    pub issuer: Option<Text>,
    pub audience: Option<OneOrMany<Text>>,
    pub secret: Option<SecretText>,
    pub keys_file: Option<Text>,
    pub jwks_url: Option<Text>,
    pub jwks_refresh: Option<Dur>,
    pub jwks_min_refetch: Option<Dur>,
    pub algorithms: Option<Vec<Text>>,
    pub identity_claim: Option<Text>,
    pub groups_claim: Option<Text>,
    pub claims_to_headers: Option<BTreeMap<String, Text>>,
    pub leeway: Option<Dur>,
    pub require_exp: Option<bool>,
    pub max_lifetime: Option<Dur>,
    /// oidc: the client registered at the provider.
    pub client_id: Option<Text>,
    pub client_secret: Option<SecretText>,
    /// oidc: `client_secret_basic` (default) or `client_secret_post`.
    pub token_auth: Option<TokenAuthFile>,
    /// oidc: where the provider sends the browser back (default `/_keyway/callback`).
    pub redirect_path: Option<Text>,
    /// oidc: the public origin (`https://app.example.com`) the redirect URI is built on; by
    /// default the request's scheme and Host.
    pub public_url: Option<Text>,
    /// oidc: default `[openid, email, profile]`.
    pub scopes: Option<Vec<Text>>,
    pub session: Option<SessionFile>,
    /// oidc: `Authorization: Bearer <access token>` to the upstream.
    pub pass_access_token: Option<bool>,
    /// oidc: `X-Keyway-Id-Token: <ID token>` to the upstream.
    pub pass_id_token: Option<bool>,
    /// oidc: hosts `rd` may name besides relative paths (`app.example.com`, `*.example.com`).
    pub allowed_redirect_hosts: Option<Vec<Text>>,
    /// oidc: where the provider POSTs back-channel logout tokens (default
    /// `/_keyway/backchannel-logout`).
    pub backchannel_logout_path: Option<Text>,
}

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthFile {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionStoreFile {
    #[default]
    Cookie,
    Redis,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    /// `cookie` (default: the session, encrypted, in the cookie) or `redis`.
    #[serde(default)]
    pub store: SessionStoreFile,
    /// redis: `redis://host:port/db` (may hold a password: treated as a secret).
    pub url: Option<SecretText>,
    /// At least 32 bytes: encrypts the session (both stores) and the sign-in state.
    pub secret: Option<SecretText>,
    /// Secrets that still decrypt (rotation): cookies made with them are re-issued.
    pub old_secrets: Option<Vec<SecretText>>,
    /// Session lifetime (default 8h).
    pub ttl: Option<Dur>,
    /// Cookie name (default `keyway_session`).
    pub cookie: Option<Text>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    pub path: Option<Text>,
    pub path_prefix: Option<Text>,
    pub host: Option<Text>,
    pub methods: Option<Vec<Text>>,
    /// Header name → exact value.
    pub headers: Option<BTreeMap<String, Text>>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnUnauthenticated {
    Status,
    Redirect,
    #[default]
    Auto,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowFile {
    #[serde(default)]
    #[schemars(with = "Vec<Text>")]
    pub consumers: Vec<Spanned<Text>>,
    #[serde(default)]
    pub groups: Vec<Text>,
    /// Claim name → required value.
    #[serde(default)]
    pub claims: BTreeMap<String, Text>,
    /// Domains the `email` claim may end in (`example.com` admits `a@example.com`).
    #[serde(default)]
    pub email_domains: Vec<Text>,
}

/// CORS preflights (`OPTIONS` with `Access-Control-Request-Method`).
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PreflightFile {
    /// Authenticated like any request (default).
    #[default]
    Authenticate,
    /// Passed without authentication (browsers send no credentials on a preflight).
    Pass,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    #[schemars(with = "Text")]
    pub name: Spanned<Text>,
    #[serde(rename = "match")]
    pub matcher: MatchFile,
    #[schemars(with = "Option<Text>")]
    pub upstream: Option<Spanned<Text>>,
    /// Authenticators tried in order; `[]` makes the route public. Required.
    #[schemars(with = "Option<Vec<Text>>")]
    pub auth: Option<Vec<Spanned<Text>>>,
    pub allow: Option<AllowFile>,
    pub on_unauthenticated: Option<OnUnauthenticated>,
    #[serde(default)]
    pub forward_client_credentials: bool,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub preflight: PreflightFile,
    /// WebSocket handshakes on this route.
    pub websocket: Option<WebsocketFile>,
    /// `true`, or settings: this route is a WebSocket multiplexer endpoint (keyway.mux.v1).
    pub mux: Option<MuxFile>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebsocketFile {
    /// Origins (`https://app.example.com`) a cookie-authenticated handshake may come from;
    /// default: the request's own origin.
    #[serde(default)]
    pub allowed_origins: Vec<Text>,
    /// `status` (default: HTTP 401/403) or `close` (complete the handshake, close with
    /// 4401/4403 and the reason code: a browser cannot read a refused handshake's body).
    #[serde(default)]
    pub refuse_with: RefuseWithFile,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RefuseWithFile {
    #[default]
    Status,
    Close,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum AccessLogFile {
    On(bool),
    To(AccessLogToFile),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogToFile {
    /// The file the lines are appended to (relative to the config file's folder).
    pub path: Text,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MuxFile {
    On(bool),
    Settings(MuxSettingsFile),
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MuxSettingsFile {
    /// Streams per connection (default 256).
    pub max_streams: Option<usize>,
    /// Largest frame a client may send (default 1048576).
    pub max_frame_bytes: Option<usize>,
    /// After the connection's credential expires: how long an `auth` frame may renew it
    /// (default 30s).
    pub grace: Option<Dur>,
}

impl AuthenticatorFile {
    /// The optional keys this entry sets, for refusing keys that do not belong to its type.
    pub fn set_keys(&self) -> Vec<&'static str> {
        let flags = [
            ("header", self.header.is_some()),
            ("from", self.from.is_some()),
            ("consumer_claim", self.consumer_claim.is_some()),
            ("issuer", self.issuer.is_some()),
            ("audience", self.audience.is_some()),
            ("secret", self.secret.is_some()),
            ("keys_file", self.keys_file.is_some()),
            ("jwks_url", self.jwks_url.is_some()),
            ("jwks_refresh", self.jwks_refresh.is_some()),
            ("jwks_min_refetch", self.jwks_min_refetch.is_some()),
            ("algorithms", self.algorithms.is_some()),
            ("identity_claim", self.identity_claim.is_some()),
            ("groups_claim", self.groups_claim.is_some()),
            ("claims_to_headers", self.claims_to_headers.is_some()),
            ("leeway", self.leeway.is_some()),
            ("require_exp", self.require_exp.is_some()),
            ("max_lifetime", self.max_lifetime.is_some()),
            ("client_id", self.client_id.is_some()),
            ("client_secret", self.client_secret.is_some()),
            ("token_auth", self.token_auth.is_some()),
            ("redirect_path", self.redirect_path.is_some()),
            ("public_url", self.public_url.is_some()),
            ("scopes", self.scopes.is_some()),
            ("session", self.session.is_some()),
            ("pass_access_token", self.pass_access_token.is_some()),
            ("pass_id_token", self.pass_id_token.is_some()),
            (
                "allowed_redirect_hosts",
                self.allowed_redirect_hosts.is_some(),
            ),
            (
                "backchannel_logout_path",
                self.backchannel_logout_path.is_some(),
            ),
        ];
        flags
            .into_iter()
            .filter_map(|(k, set)| set.then_some(k))
            .collect()
    }
}

impl AuthenticatorType {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthenticatorType::ApiKey => "api_key",
            AuthenticatorType::Jwt => "jwt",
            AuthenticatorType::Oidc => "oidc",
        }
    }

    /// Keys valid for this type besides `type`.
    pub const fn keys(self) -> &'static [&'static str] {
        match self {
            AuthenticatorType::ApiKey => &["header", "from"],
            AuthenticatorType::Jwt => &[
                "from",
                "consumer_claim",
                "issuer",
                "audience",
                "secret",
                "keys_file",
                "jwks_url",
                "jwks_refresh",
                "jwks_min_refetch",
                "algorithms",
                "identity_claim",
                "groups_claim",
                "claims_to_headers",
                "leeway",
                "require_exp",
                "max_lifetime",
            ],
            AuthenticatorType::Oidc => &[
                "issuer",
                "client_id",
                "client_secret",
                "token_auth",
                "redirect_path",
                "public_url",
                "scopes",
                "session",
                "identity_claim",
                "groups_claim",
                "claims_to_headers",
                "leeway",
                "pass_access_token",
                "pass_id_token",
                "allowed_redirect_hosts",
                "backchannel_logout_path",
            ],
        }
    }
}
