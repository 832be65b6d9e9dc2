//! Stable reason codes: every refusal names one, the README documents each, metrics count them.

use http::StatusCode;

macro_rules! reasons {
    ($($variant:ident => ($code:literal, $status:expr, $meaning:literal)),* $(,)?) => {
        /// Why keyway refused a request. The dotted code is a stable public contract.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason { $($variant),* }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            pub const fn code(self) -> &'static str {
                match self { $(Reason::$variant => $code),* }
            }

            /// The status keyway answers with for this reason.
            pub fn status(self) -> StatusCode {
                match self { $(Reason::$variant => $status),* }
            }

            /// One line for the README table and `keyway check`.
            pub const fn meaning(self) -> &'static str {
                match self { $(Reason::$variant => $meaning),* }
            }
        }
    };
}

reasons! {
    RouteNone => ("route.none", StatusCode::NOT_FOUND, "No route matches the request's host, path, method and headers."),
    PathInvalid => ("request.bad_path", StatusCode::BAD_REQUEST, "The path is not one keyway can route on: dot segments (raw, percent-encoded or before `;`), a `%` without two hex digits, an encoded NUL, or a request-target that is not a path."),
    PathEncodedSlash => ("path.encoded_slash", StatusCode::BAD_REQUEST, "The path has `%2F`, `%5C` or `\\`, which upstreams decode differently; allowed with `paths.encoded_slashes: keep`."),
    PathSemicolon => ("path.semicolon", StatusCode::BAD_REQUEST, "The path has `;`, which servlet containers cut from each segment; allowed with `paths.semicolons: keep`."),
    HostMissing => ("host.missing", StatusCode::BAD_REQUEST, "An HTTP/1.1 or HTTP/2 request names no host (no `Host`, no absolute-form target, no `:authority`)."),
    HostConflicting => ("host.conflicting", StatusCode::BAD_REQUEST, "More than one `Host`, or a `Host` that disagrees with the request-target's authority or `:authority`."),
    HostInvalid => ("host.invalid", StatusCode::BAD_REQUEST, "The authority is not a host name or IP literal with an optional port (userinfo, percent-encoding, empty labels, a bad port)."),
    RequestBodyInvalid => ("request.body_invalid", StatusCode::BAD_REQUEST, "The request body is malformed (an invalid chunk size or chunk line) or ended before its declared length."),
    HeaderUnderscore => ("header.underscore", StatusCode::BAD_REQUEST, "A header name contains `_` and `headers.underscores` is `reject`."),
    HeaderAmbiguous => ("header.ambiguous", StatusCode::BAD_REQUEST, "Two header names fold to the same name (`X-User_Id` and `X-User-Id`); backends could confuse them."),
    HeaderTooLarge => ("header.too_large", StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "The request headers exceed `headers.max_request_header_bytes` or `headers.max_request_headers`."),
    HeaderMalformed => ("header.malformed", StatusCode::BAD_REQUEST, "The request head could not be parsed: invalid header name or value (bare CR, NUL), obs-fold, a line without a colon, or conflicting Content-Length."),
    UriTooLong => ("request.uri_too_long", StatusCode::URI_TOO_LONG, "The request URI is longer than the HTTP parser accepts."),
    HeaderFraming => ("header.bad_framing", StatusCode::BAD_REQUEST, "The request carries both Content-Length and Transfer-Encoding (a request-smuggling pattern)."),
    CredentialsMissing => ("credentials.missing", StatusCode::UNAUTHORIZED, "None of the route's authenticators found a credential; the detail lists every place searched."),
    CredentialsConflicting => ("credentials.conflicting", StatusCode::UNAUTHORIZED, "Two different credentials arrived in two sources of one request."),
    ApiKeyInvalid => ("api_key.invalid", StatusCode::UNAUTHORIZED, "The API key matches no consumer."),
    JwtMalformed => ("jwt.malformed", StatusCode::UNAUTHORIZED, "The token is not a well-formed JWS compact token (three base64url parts of JSON)."),
    JwtAlgNotAllowed => ("jwt.alg_not_allowed", StatusCode::UNAUTHORIZED, "The token's `alg` is not the algorithm configured for the key (includes `none`)."),
    JwtSignatureInvalid => ("jwt.signature_invalid", StatusCode::UNAUTHORIZED, "The signature does not verify with the configured key."),
    JwtExpired => ("jwt.expired", StatusCode::UNAUTHORIZED, "`exp` is in the past, beyond the leeway."),
    JwtNotYetValid => ("jwt.not_yet_valid", StatusCode::UNAUTHORIZED, "`nbf` (or `iat`) is in the future, beyond the leeway."),
    JwtLifetimeTooLong => ("jwt.lifetime_too_long", StatusCode::UNAUTHORIZED, "`exp - iat` exceeds `max_lifetime`."),
    JwtIssuerMismatch => ("jwt.issuer_mismatch", StatusCode::UNAUTHORIZED, "`iss` is not the configured issuer."),
    JwtAudienceMismatch => ("jwt.audience_mismatch", StatusCode::UNAUTHORIZED, "`aud` names none of the configured audiences."),
    JwtKeyUnknown => ("jwt.key_unknown", StatusCode::UNAUTHORIZED, "No configured or fetched key matches the token's `kid`."),
    JwtClaimMissing => ("jwt.claim_missing", StatusCode::UNAUTHORIZED, "A required claim (`exp`, the identity claim, …) is absent."),
    JwtClaimInvalid => ("jwt.claim_invalid", StatusCode::UNAUTHORIZED, "A claim has the wrong type (e.g. `exp` not a number)."),
    JwtCritUnsupported => ("jwt.crit_unsupported", StatusCode::UNAUTHORIZED, "The token header has `crit`; keyway understands no extensions."),
    JwtConsumerClaimMissing => ("jwt.consumer_claim_missing", StatusCode::UNAUTHORIZED, "The token lacks the claim that names its consumer (`consumer_claim`)."),
    JwtConsumerUnknown => ("jwt.consumer_unknown", StatusCode::UNAUTHORIZED, "The token names a consumer that has no JWT credential configured."),
    JwtKeysUnavailable => ("jwt.keys_unavailable", StatusCode::SERVICE_UNAVAILABLE, "The issuer's JWKS has never been fetched successfully."),
    AuthzDenied => ("authz.denied", StatusCode::FORBIDDEN, "Authenticated, but the route's `allow` does not admit this identity."),
    UpstreamUnreachable => ("upstream.unreachable", StatusCode::BAD_GATEWAY, "keyway could not connect to the upstream."),
    UpstreamTimeout => ("upstream.timeout", StatusCode::GATEWAY_TIMEOUT, "The upstream did not connect or answer within its timeouts."),
    UpstreamProtocol => ("upstream.protocol", StatusCode::BAD_GATEWAY, "The upstream answered with something that is not valid HTTP, or closed early."),
    SessionInvalid => ("session.invalid", StatusCode::UNAUTHORIZED, "The session cookie does not open: altered, cut short (a missing chunk), or sealed with a secret keyway does not hold."),
    SessionExpired => ("session.expired", StatusCode::UNAUTHORIZED, "The session outlived `session.ttl`, or its tokens expired and could not be renewed."),
    SessionRevoked => ("session.revoked", StatusCode::UNAUTHORIZED, "The session was signed out (here, on another instance, or by the provider's back-channel logout)."),
    SessionStoreUnavailable => ("session.store_unavailable", StatusCode::SERVICE_UNAVAILABLE, "The session store (Redis) could not be reached."),
    OidcProviderUnavailable => ("oidc.provider_unavailable", StatusCode::SERVICE_UNAVAILABLE, "The OpenID provider has not been discovered yet, or its token endpoint could not be reached."),
    OidcStateInvalid => ("oidc.state_invalid", StatusCode::BAD_REQUEST, "The sign-in callback's `state` matches no sign-in in progress: missing, altered, expired (10 min) or replayed."),
    OidcCodeRejected => ("oidc.code_rejected", StatusCode::UNAUTHORIZED, "The provider refused the authorization code (used already, expired, or for another client)."),
    OidcNonceMismatch => ("oidc.nonce_mismatch", StatusCode::UNAUTHORIZED, "The ID token's `nonce` is not the one the sign-in sent."),
    OidcSignInFailed => ("oidc.sign_in_failed", StatusCode::UNAUTHORIZED, "The provider answered the sign-in with an error (e.g. `access_denied`), or with another issuer."),
    OidcLogoutTokenInvalid => ("oidc.logout_token_invalid", StatusCode::BAD_REQUEST, "A back-channel logout request without a valid logout token."),
    ForwardAuthUntrusted => ("forward_auth.untrusted", StatusCode::FORBIDDEN, "A forward-auth request from a peer outside `trusted_proxies`: its `X-Original-*` / `X-Forwarded-*` headers are not believed."),
    ForwardAuthNoOriginal => ("forward_auth.no_original", StatusCode::FORBIDDEN, "A forward-auth request that does not describe the original request (no `X-Original-URL`, `X-Original-URI` or `X-Forwarded-Uri`)."),
    WebsocketBadSubprotocol => ("websocket.bad_subprotocol", StatusCode::BAD_REQUEST, "More than one bearer-token subprotocol, or one that is not a token in unpadded base64url."),
    WebsocketOriginDenied => ("websocket.origin_denied", StatusCode::FORBIDDEN, "A cookie-authenticated WebSocket handshake from an origin the route does not allow (cross-site WebSocket hijacking)."),
    MuxBadHandshake => ("mux.bad_handshake", StatusCode::BAD_REQUEST, "A request to a multiplexer route that is not a WebSocket handshake offering `keyway.mux.v1`."),
    MuxBadFrame => ("mux.bad_frame", StatusCode::BAD_REQUEST, "A multiplexer frame that is not valid JSON, has an unknown type or no id, or a binary frame shorter than its id."),
    MuxUnknownStream => ("mux.unknown_stream", StatusCode::NOT_FOUND, "A `data` or `close` frame for a stream id not open on this connection."),
    MuxDuplicateId => ("mux.duplicate_id", StatusCode::CONFLICT, "An `open` frame for a stream id already open on this connection."),
    MuxTooManyStreams => ("mux.too_many_streams", StatusCode::TOO_MANY_REQUESTS, "An `open` beyond the connection's `mux.max_streams`."),
    MuxFrameTooLarge => ("mux.frame_too_large", StatusCode::PAYLOAD_TOO_LARGE, "A multiplexer frame beyond `mux.max_frame_bytes` (the connection stays; beyond twice the limit it is closed with 1009)."),
    MuxStreamOverflow => ("mux.stream_overflow", StatusCode::SERVICE_UNAVAILABLE, "A stream whose upstream stopped reading while the client kept sending: twice `mux.max_frame_bytes` waited for it for 5 s. The stream is closed; the connection and its other streams go on."),
    UpstreamHandshakeRefused => ("upstream.handshake_refused", StatusCode::BAD_GATEWAY, "The upstream refused a WebSocket handshake keyway made for a multiplexer stream (e.g. 401: a missing credential)."),
    JwtEmbeddedKey => ("jwt.embedded_key", StatusCode::UNAUTHORIZED, "The token header carries its own key or key location (`jwk`, `jku`, `x5u`, `x5c`); keyway never trusts them and refuses such tokens."),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_dotted() {
        let mut seen = HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.code()), "duplicate {}", r.code());
            assert!(r.code().contains('.'));
        }
    }

    #[test]
    fn readme_documents_every_reason() {
        let readme = include_str!("../README.md");
        for r in Reason::ALL {
            let row = format!("| `{}` | {} |", r.code(), r.status().as_u16());
            assert!(
                readme.contains(&row),
                "README.md lacks the row for {}",
                r.code()
            );
        }
    }
}
