//! The attack catalogue of research/jwt.md §6, each row that applies to a verifying gateway,
//! built for real and sent through keyway. Every attack must be refused with 401 and its own
//! reason (never a 5xx, never reaching the upstream), and no refusal may echo the token.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use crate::jwt_support::*;
use crate::start_keys;
use crate::support::*;

const SECRET: &str = "user-secret-0123456789abcdef01234";
/// `P` of the research notes: a forged admin claim for consumer user-key, exp in 2100.
const P: &str = r#"{"sub":"admin","key":"user-key","exp":4102444800}"#;

struct Attack {
    row: &'static str,
    path: &'static str,
    token: String,
    reason: &'static str,
}

fn attack(row: &'static str, path: &'static str, token: String, reason: &'static str) -> Attack {
    Attack {
        row,
        path,
        token,
        reason,
    }
}

fn hs_raw(header: &str, payload: &str, key: &[u8]) -> String {
    signed_raw(
        header,
        payload,
        Algorithm::HS256,
        &EncodingKey::from_secret(key),
    )
}

fn sig_of(token: &str) -> &str {
    token.rsplit('.').next().unwrap()
}

/// Claims valid for the issuer-mode route `/i/` (issuer, audience, lifetime within 1h).
fn issuer_claims(extra: serde_json::Value) -> String {
    let base = json!({"sub": "u", "iss": "https://idp.test", "aud": "keyway", "iat": now(), "exp": now() + 600});
    patched(base, extra).to_string()
}

fn rs(header: &str, payload: &str) -> String {
    signed_raw(header, payload, Algorithm::RS256, &rsa_key("rsa.key.pem"))
}

async fn gateway(up: &Upstream, trap: &Upstream) -> Gateway {
    let set = jwks(&[
        jwk("rsa.key.pem", Algorithm::RS256, "k1"),
        jwk("rsa2.key.pem", Algorithm::RS256, "k2"),
    ]);
    let _ = trap;
    start_keys(
        &format!(
            r#"
upstreams: {{app: {{url: "{}"}}}}
consumers:
  - {{name: user, jwt: {{key: user-key, secret: "{SECRET}"}}}}
  - {{name: rs, jwt: {{key: rs-key, public_key_file: rsa.pub.pem, algorithm: RS256}}}}
  - {{name: es, jwt: {{key: es-key, public_key_file: ec.pub.pem, algorithm: ES256}}}}
authenticators:
  cj: {{type: jwt, from: [header:Authorization, query:jwt, cookie:jwt]}}
  iss: {{type: jwt, keys_file: idp.jwks.json, issuer: https://idp.test, audience: [keyway], max_lifetime: 1h}}
routes:
  - {{name: c, match: {{path_prefix: /c/}}, upstream: app, auth: [cj]}}
  - {{name: i, match: {{path_prefix: /i/}}, upstream: app, auth: [iss]}}
"#,
            up.url()
        ),
        &[("idp.jwks.json", set.as_bytes())],
    )
    .await
}

fn catalogue(trap_url: &str) -> Vec<Attack> {
    let pub_pem = key_bytes("rsa.pub.pem");
    let pub_trimmed = String::from_utf8_lossy(&pub_pem).trim_end().to_owned();
    let ec_pub = key_bytes("ec.pub.pem");
    let good_hs = hs_raw(r#"{"alg":"HS256","typ":"JWT"}"#, P, SECRET.as_bytes());
    let good_es = signed_raw(
        r#"{"alg":"ES256"}"#,
        r#"{"key":"es-key","exp":4102444800}"#,
        Algorithm::ES256,
        &ec_key("ec.key.pem"),
    );
    let (h, p, _) = {
        let mut it = good_hs.split('.');
        (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
    };
    let es_input = good_es.rsplit_once('.').unwrap().0.to_owned();
    let es_sig = URL_SAFE_NO_PAD.decode(sig_of(&good_es)).unwrap();
    let n256 = hex("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551");
    let rsa_claims = r#"{"key":"rs-key","exp":4102444800}"#;
    let attacker_jwk = jwk("rsa2.key.pem", Algorithm::RS256, "evil").to_string();
    let mut v = vec![
        // 1. alg none, in every spelling, with and without the original signature.
        attack("1 alg none", "/c/", raw_token(r#"{"alg":"none","typ":"JWT"}"#, P, ""), "jwt.alg_not_allowed"),
        attack("1 alg None", "/c/", raw_token(r#"{"alg":"None"}"#, P, ""), "jwt.alg_not_allowed"),
        attack("1 alg NONE", "/c/", raw_token(r#"{"alg":"NONE"}"#, P, ""), "jwt.alg_not_allowed"),
        attack("1 alg nOnE", "/c/", raw_token(r#"{"alg":"nOnE"}"#, P, ""), "jwt.alg_not_allowed"),
        attack("1 alg none + signature", "/c/", raw_token(r#"{"alg":"none"}"#, P, sig_of(&good_hs)), "jwt.alg_not_allowed"),
        attack("1 research sample", "/c/", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiIsImtleSI6InVzZXIta2V5IiwiZXhwIjo0MTAyNDQ0ODAwfQ.".into(), "jwt.alg_not_allowed"),
        // 2. Null signature.
        attack("2 empty signature", "/c/", format!("{h}.{p}."), "jwt.signature_invalid"),
        // 3. Tampered payload, truncated signature.
        attack("3 tampered payload", "/c/", format!("{h}.{}.{}", b64(P.replace("admin", "root")), sig_of(&good_hs)), "jwt.signature_invalid"),
        attack("3 truncated signature", "/c/", good_hs[..good_hs.len() - 3].to_owned(), "jwt.signature_invalid"),
        // 4. RS/HS confusion: HMAC keyed with the consumer's public key PEM.
        attack("4 HS256 keyed with RSA PEM", "/c/", hs_raw(r#"{"alg":"HS256"}"#, rsa_claims, &pub_pem), "jwt.alg_not_allowed"),
        attack("4 HS256 keyed with trimmed PEM", "/c/", hs_raw(r#"{"alg":"HS256"}"#, rsa_claims, pub_trimmed.as_bytes()), "jwt.alg_not_allowed"),
        attack("4 HS256 keyed with EC PEM", "/c/", hs_raw(r#"{"alg":"HS256"}"#, r#"{"key":"es-key","exp":4102444800}"#, &ec_pub), "jwt.alg_not_allowed"),
        attack("4 HS256 with JWKS kid", "/i/", hs_raw(r#"{"alg":"HS256","kid":"k1"}"#, &issuer_claims(json!({})), &pub_pem), "jwt.alg_not_allowed"),
        // 6. Psychic signatures (CVE-2022-21449).
        attack("6 zero ES256 signature", "/c/", format!("{es_input}.{}", "A".repeat(86)), "jwt.signature_invalid"),
        attack("6 r=s=n", "/c/", format!("{es_input}.{}", b64([n256.clone(), n256].concat())), "jwt.signature_invalid"),
        attack("6 DER zero", "/c/", format!("{es_input}.MAYCAQACAQA"), "jwt.signature_invalid"),
        // 7. ECDSA encodings: DER instead of raw R‖S, 63 and 65 bytes.
        attack("7 DER-encoded", "/c/", format!("{es_input}.{}", b64(der(&es_sig))), "jwt.signature_invalid"),
        attack("7 63 bytes", "/c/", format!("{es_input}.{}", b64(&es_sig[..63])), "jwt.signature_invalid"),
        attack("7 65 bytes", "/c/", format!("{es_input}.{}", b64([es_sig.as_slice(), &[0]].concat())), "jwt.signature_invalid"),
        // 8. Blank HMAC secret.
        attack("8 blank secret", "/c/", hs_raw(r#"{"alg":"HS256","typ":"JWT"}"#, P, b""), "jwt.signature_invalid"),
        // 10. Embedded jwk, signed with the attacker's key.
        attack("10 embedded jwk", "/c/", signed_raw(&format!(r#"{{"alg":"RS256","jwk":{attacker_jwk}}}"#), rsa_claims, Algorithm::RS256, &rsa_key("rsa2.key.pem")), "jwt.embedded_key"),
        attack("10 embedded x5c", "/c/", rs(r#"{"alg":"RS256","x5c":["MIIB"]}"#, rsa_claims), "jwt.embedded_key"),
        // 11. jku / x5u pointing at a listener that must never be called.
        attack("11 jku", "/c/", rs(&format!(r#"{{"alg":"RS256","jku":"{trap_url}/jwks.json"}}"#), rsa_claims), "jwt.embedded_key"),
        attack("11 x5u", "/i/", rs(&format!(r#"{{"alg":"RS256","kid":"k1","x5u":"{trap_url}/cert.pem"}}"#), &issuer_claims(json!({}))), "jwt.embedded_key"),
        // 12, 13. kid traversal and injection: an opaque map key, so simply unknown.
        attack("12 kid traversal", "/i/", hs_raw(r#"{"alg":"HS256","kid":"../../../../../../dev/null"}"#, &issuer_claims(json!({})), b""), "jwt.key_unknown"),
        attack("12 kid /proc", "/i/", hs_raw(r#"{"alg":"HS256","kid":"/proc/sys/kernel/randomize_va_space"}"#, &issuer_claims(json!({})), b"2"), "jwt.key_unknown"),
        attack("13 kid SQL", "/i/", hs_raw(r#"{"alg":"HS256","kid":"x' UNION SELECT '1';--"}"#, &issuer_claims(json!({})), b"1"), "jwt.key_unknown"),
        attack("13 kid command", "/i/", hs_raw(r#"{"alg":"HS256","kid":"|sleep 10"}"#, &issuer_claims(json!({})), b"1"), "jwt.key_unknown"),
        // 14. kid type confusion; kid of one key, signature of another.
        attack("14 kid number", "/i/", rs(r#"{"alg":"RS256","kid":1}"#, &issuer_claims(json!({}))), "jwt.malformed"),
        attack("14 kid array", "/i/", rs(r#"{"alg":"RS256","kid":["k1"]}"#, &issuer_claims(json!({}))), "jwt.malformed"),
        attack("14 kid object", "/i/", rs(r#"{"alg":"RS256","kid":{"a":1}}"#, &issuer_claims(json!({}))), "jwt.malformed"),
        attack("14 kid k2 signed by k1", "/i/", rs(r#"{"alg":"RS256","kid":"k2"}"#, &issuer_claims(json!({}))), "jwt.signature_invalid"),
        // 15. crit.
        attack("15 crit unknown", "/c/", format!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImNyaXQiOlsieC11bmtub3duIl0sIngtdW5rbm93biI6dHJ1ZX0.{p}.{}", sig_of(&good_hs)), "jwt.crit_unsupported"),
        attack("15 crit b64", "/c/", hs_raw(r#"{"alg":"HS256","crit":["b64"],"b64":false}"#, P, SECRET.as_bytes()), "jwt.crit_unsupported"),
        // 16. Nested JWT, JWE shapes.
        attack("16 nested cty JWT", "/c/", hs_raw(r#"{"alg":"HS256","cty":"JWT"}"#, P, SECRET.as_bytes()), "jwt.malformed"),
        attack("16 five-part JWE", "/c/", format!("{}.AAAA.AAAA.AAAA.AAAA", b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#)), "jwt.malformed"),
        attack("16 PBES2 p2c", "/c/", format!("{}.AAAA.AAAA.AAAA.AAAA", b64(r#"{"alg":"PBES2-HS256+A128KW","enc":"A128GCM","p2c":2147483647,"p2s":"AAAA"}"#)), "jwt.malformed"),
        attack("16 enc in a JWS", "/c/", hs_raw(r#"{"alg":"HS256","enc":"A128GCM","zip":"DEF"}"#, P, SECRET.as_bytes()), "jwt.malformed"),
        // 17. Serialization and encoding.
        attack("17 JSON serialization", "/c/", format!(r#"{{"payload":"{p}","signatures":[]}}"#), "jwt.malformed"),
        attack("17 four parts", "/c/", format!("{good_hs}.AAAA"), "jwt.malformed"),
        attack("17 six parts", "/c/", format!("{good_hs}.AAAA.AAAA.AAAA"), "jwt.malformed"),
        attack("17 padding", "/c/", format!("{}=.{p}.{}", b64(r#"{"alg":"HS256","typ":"JWT"}"#), sig_of(&good_hs)), "jwt.malformed"),
        attack("17 standard alphabet", "/c/", format!("{h}.{p}.{}", STANDARD.encode(URL_SAFE_NO_PAD.decode(sig_of(&good_hs)).unwrap()).replace('=', "").replace(['-', '_'], "+")), "jwt.malformed"),
        attack("17 embedded whitespace", "/c/", format!("{h}.{}\t{}.{}", &p[..4], &p[4..], sig_of(&good_hs)), "jwt.malformed"),
        attack("17 non-canonical trailing bits", "/c/", format!("{h}.{p}.{}", non_canonical(sig_of(&good_hs))), "jwt.malformed"),
        attack("17 not base64", "/c/", format!("{h}.{p}.!!!!"), "jwt.malformed"),
        attack("17 payload not JSON", "/c/", format!("{h}.{}.{}", b64("not json"), sig_of(&good_hs)), "jwt.malformed"),
        attack("17 one part", "/c/", "eyJhbGciOiJIUzI1NiJ9".into(), "jwt.malformed"),
        // 18. Duplicate members.
        attack("18 duplicate alg", "/c/", format!("eyJhbGciOiJIUzI1NiIsImFsZyI6Im5vbmUifQ.{p}.{}", sig_of(&good_hs)), "jwt.malformed"),
        attack("18 duplicate sub", "/c/", hs_raw(r#"{"alg":"HS256"}"#, r#"{"key":"user-key","sub":"user","sub":"admin","exp":4102444800}"#, SECRET.as_bytes()), "jwt.malformed"),
        // 19. Time claims.
        attack("19 expired", "/c/", hs_raw(r#"{"alg":"HS256"}"#, &format!(r#"{{"key":"user-key","exp":{}}}"#, now() - 31), SECRET.as_bytes()), "jwt.expired"),
        attack("19 negative exp", "/c/", hs_raw(r#"{"alg":"HS256"}"#, r#"{"key":"user-key","exp":-1}"#, SECRET.as_bytes()), "jwt.expired"),
        attack("19 nbf future", "/c/", hs_raw(r#"{"alg":"HS256"}"#, &format!(r#"{{"key":"user-key","exp":4102444800,"nbf":{}}}"#, now() + 120), SECRET.as_bytes()), "jwt.not_yet_valid"),
        attack("19 iat future", "/c/", hs_raw(r#"{"alg":"HS256"}"#, &format!(r#"{{"key":"user-key","exp":4102444800,"iat":{}}}"#, now() + 3600), SECRET.as_bytes()), "jwt.not_yet_valid"),
        attack("19 exp string", "/c/", hs_raw(r#"{"alg":"HS256"}"#, r#"{"key":"user-key","exp":"1879318541"}"#, SECRET.as_bytes()), "jwt.claim_invalid"),
        attack("19 exp bool", "/c/", hs_raw(r#"{"alg":"HS256"}"#, r#"{"key":"user-key","exp":true}"#, SECRET.as_bytes()), "jwt.claim_invalid"),
        attack("19 exp null", "/c/", hs_raw(r#"{"alg":"HS256"}"#, r#"{"key":"user-key","exp":null}"#, SECRET.as_bytes()), "jwt.claim_invalid"),
        attack("19 exp missing", "/c/", hs_raw(r#"{"alg":"HS256"}"#, r#"{"key":"user-key"}"#, SECRET.as_bytes()), "jwt.claim_missing"),
        attack("19 exp > 2^63", "/i/", rs(r#"{"alg":"RS256","kid":"k1"}"#, &issuer_claims(json!({"exp": 1e19}))), "jwt.lifetime_too_long"),
        // 20. Lifetime abuse.
        attack("20 ten-year token", "/i/", rs(r#"{"alg":"RS256","kid":"k1"}"#, &issuer_claims(json!({"exp": now() + 10 * 365 * 86_400}))), "jwt.lifetime_too_long"),
        // 21. Substitution: another audience, issuer, none.
        attack("21 other audience", "/i/", rs(r#"{"alg":"RS256","kid":"k1"}"#, &issuer_claims(json!({"aud": "billing"}))), "jwt.audience_mismatch"),
        attack("21 aud array without us", "/i/", rs(r#"{"alg":"RS256","kid":"k1"}"#, &issuer_claims(json!({"aud": ["billing", "keyway-admin"]}))), "jwt.audience_mismatch"),
        attack("21 missing aud", "/i/", rs(r#"{"alg":"RS256","kid":"k1"}"#, &issuer_claims(json!({"aud": null}))), "jwt.audience_mismatch"),
        attack("21 other issuer", "/i/", rs(r#"{"alg":"RS256","kid":"k1"}"#, &issuer_claims(json!({"iss": "https://idp.test.evil"}))), "jwt.issuer_mismatch"),
        // 22. Downgrade inside a family, misspelt algorithms.
        attack("22 RS512 for RS256 key", "/c/", signed_raw(r#"{"alg":"RS512"}"#, rsa_claims, Algorithm::RS512, &rsa_key("rsa.key.pem")), "jwt.alg_not_allowed"),
        attack("22 PS256 for RS256 key", "/c/", signed_raw(r#"{"alg":"PS256"}"#, rsa_claims, Algorithm::PS256, &rsa_key("rsa.key.pem")), "jwt.alg_not_allowed"),
        attack("22 alg hs256", "/c/", hs_raw(r#"{"alg":"hs256"}"#, P, SECRET.as_bytes()), "jwt.alg_not_allowed"),
        attack("22 alg 'HS256 '", "/c/", hs_raw(r#"{"alg":"HS256 "}"#, P, SECRET.as_bytes()), "jwt.alg_not_allowed"),
        attack("22 alg array", "/c/", hs_raw(r#"{"alg":["HS256"]}"#, P, SECRET.as_bytes()), "jwt.malformed"),
        attack("22 alg missing", "/c/", hs_raw(r#"{"typ":"JWT"}"#, P, SECRET.as_bytes()), "jwt.malformed"),
        attack("22 ES512", "/c/", format!("{}.{p}.{}", b64(r#"{"alg":"ES512"}"#), "A".repeat(176)), "jwt.alg_not_allowed"),
        // 23. Large and deep.
        attack("23 20 KB header", "/c/", hs_raw(&format!(r#"{{"alg":"HS256","x":"{}"}}"#, "a".repeat(20_000)), P, SECRET.as_bytes()), "jwt.malformed"),
        attack("23 deep nesting", "/c/", hs_raw(r#"{"alg":"HS256"}"#, &format!(r#"{{"key":"user-key","exp":4102444800,"x":{}{}}}"#, "[".repeat(3000), "]".repeat(3000)), SECRET.as_bytes()), "jwt.malformed"),
        attack("23 long ES signature", "/c/", format!("{es_input}.{}", "A".repeat(12_000)), "jwt.signature_invalid"),
        attack("23 21830-char ES signature", "/c/", format!("{es_input}.{}", "A".repeat(21_830)), "jwt.malformed"),
        // 25. Control characters in the consumer claim.
        attack("25 CRLF in key", "/c/", hs_raw(r#"{"alg":"HS256"}"#, r#"{"key":"user-key\r\nX-Admin: 1","exp":4102444800}"#, SECRET.as_bytes()), "jwt.consumer_unknown"),
        // 28. Enumeration: an unknown consumer says so (documented: consumer keys are not secrets).
        attack("28 unknown consumer", "/c/", hs_raw(r#"{"alg":"HS256"}"#, r#"{"key":"guess","exp":4102444800}"#, SECRET.as_bytes()), "jwt.consumer_unknown"),
    ];
    v.push(attack(
        "3 signature of another token",
        "/c/",
        format!(
            "{h}.{p}.{}",
            sig_of(&hs(SECRET, &json!({"key": "user-key", "exp": 1})))
        ),
        "jwt.signature_invalid",
    ));
    v
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Raw R‖S as an ASN.1 DER SEQUENCE of two INTEGERs.
fn der(raw: &[u8]) -> Vec<u8> {
    let int = |x: &[u8]| {
        let mut v = x
            .iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>();
        if v.first().is_some_and(|b| *b >= 0x80) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let body = [int(&raw[..32]), int(&raw[32..])].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

/// The same bytes with non-zero unused trailing bits: decodes leniently, not canonically.
fn non_canonical(sig: &str) -> String {
    let mut chars: Vec<char> = sig.chars().collect();
    // 43 characters carry 258 bits for 256: the last character's low 2 bits are unused.
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = chars.pop().unwrap();
    let i = alphabet.find(last).unwrap();
    chars.push(alphabet.chars().nth(i | 1).unwrap());
    chars.into_iter().collect()
}

#[tokio::test]
async fn every_attack_is_refused_with_its_reason() {
    let up = upstream_ok().await;
    let trap = upstream_ok().await;
    let gw = gateway(&up, &trap).await;
    // Sanity: the honest tokens of both routes pass, so refusals below are the attacks'.
    let honest = hs_raw(r#"{"alg":"HS256","typ":"JWT"}"#, P, SECRET.as_bytes());
    let a = get(
        &gw.url("/c/x"),
        &[("authorization", &format!("Bearer {honest}"))],
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    let honest_i = rs(r#"{"alg":"RS256","kid":"k1"}"#, &issuer_claims(json!({})));
    let a = get(
        &gw.url("/i/x"),
        &[("authorization", &format!("Bearer {honest_i}"))],
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    let passed = up.requests().len();

    let mut failures = Vec::new();
    for a in catalogue(&trap.url()) {
        let answer = get(
            &gw.url(&format!("{}x", a.path)),
            &[("authorization", &format!("Bearer {}", a.token))],
        )
        .await;
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if answer.status != 401 || reason != a.reason {
            failures.push(format!(
                "row {}: got {} {reason:?}, want 401 {:?}: {body}",
                a.row, answer.status, a.reason
            ));
            continue;
        }
        let www = answer.header("www-authenticate");
        if !www.contains("error=\"invalid_token\"") {
            failures.push(format!("row {}: WWW-Authenticate {www:?}", a.row));
        }
        let sig = sig_of(&a.token);
        if sig.len() >= 8 && (body.contains(sig) || www.contains(sig)) {
            failures.push(format!("row {}: the refusal echoes the signature", a.row));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        up.requests().len(),
        passed,
        "an attack reached the upstream"
    );
    assert!(
        trap.requests().is_empty(),
        "keyway dereferenced a token-supplied URL"
    );
    gw.stop().await;
}

#[tokio::test]
async fn conflicting_and_oversized_tokens_never_reach_the_upstream() {
    let up = upstream_ok().await;
    let trap = upstream_ok().await;
    let gw = gateway(&up, &trap).await;
    let good = hs_raw(r#"{"alg":"HS256"}"#, P, SECRET.as_bytes());
    let forged = raw_token(r#"{"alg":"none"}"#, P, "");
    // Row 24: a valid token in Authorization, a forged one in the query or a cookie.
    for extra in [
        (format!("/c/x?jwt={forged}"), None),
        ("/c/x".to_owned(), Some(format!("jwt={forged}"))),
    ] {
        let mut headers = vec![("authorization".to_owned(), format!("Bearer {good}"))];
        if let Some(c) = extra.1 {
            headers.push(("cookie".to_owned(), c));
        }
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let a = get(&gw.url(&extra.0), &h).await;
        assert_problem(&a, 401, "credentials.conflicting");
    }
    // Two Authorization headers: whatever keyway decides, the forged one never travels on.
    let a = get(
        &gw.url("/c/x"),
        &[
            ("authorization", &format!("Bearer {good}")),
            ("authorization", &format!("Bearer {forged}")),
        ],
    )
    .await;
    assert!(a.status == 200 || a.status == 401, "{}", a.status);
    for seen in up.requests() {
        assert!(
            !seen.headers.contains_key("authorization"),
            "a token reached the upstream"
        );
    }
    let passed = up.requests().len();
    // Row 23: a token beyond the request-header limit is refused by the header limits.
    let huge = format!("Bearer {}", "a".repeat(70_000));
    let a = get(&gw.url("/c/x"), &[("authorization", &huge)]).await;
    assert!(a.status.is_client_error(), "{}", a.status);
    assert_eq!(up.requests().len(), passed);
    gw.stop().await;
}

/// Random corruptions of a valid token over HTTP: always a 401 or a 200, never a 5xx.
#[tokio::test]
async fn corrupted_tokens_never_cause_a_server_error() {
    let up = upstream_ok().await;
    let trap = upstream_ok().await;
    let gw = gateway(&up, &trap).await;
    let good = hs_raw(r#"{"alg":"HS256","kid":"k"}"#, P, SECRET.as_bytes()).into_bytes();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/";
    let state = Arc::new(Mutex::new(0x9e37_79b9_7f4a_7c15_u64));
    let next = || {
        let mut s = state.lock().unwrap();
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    };
    for _ in 0..300 {
        let mut t = good.clone();
        for _ in 0..(next() % 3 + 1) {
            let i = next() as usize % t.len();
            t[i] = alphabet[next() as usize % alphabet.len()];
        }
        let token = String::from_utf8(t).unwrap();
        let a = get(
            &gw.url("/c/x"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert!(
            a.status == 200 || a.status == 401,
            "{token}: {} {:?}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
    }
    gw.stop().await;
}

#[test]
fn weak_and_empty_secrets_are_caught_at_load() {
    let yaml = |secret: &str| {
        format!(
            r#"
upstreams: {{app: {{builtin: echo}}}}
consumers:
  - {{name: u, jwt: {{key: u, secret: "{secret}"}}}}
authenticators:
  cj: {{type: jwt}}
routes:
  - {{name: r, match: {{path_prefix: /}}, upstream: app, auth: [cj]}}
"#
        )
    };
    let dir = keys_dir();
    let errors = keyway::pipeline::compile::load_str(&yaml(""), &dir)
        .err()
        .expect("empty secret refused");
    assert!(
        errors.iter().any(|e| e.message.contains("empty")),
        "{errors:?}"
    );
    let Ok(loaded) = keyway::pipeline::compile::load_str(&yaml("short"), &dir) else {
        panic!("a short secret loads, with a warning");
    };
    assert!(
        loaded.warnings.iter().any(|w| w.code == "jwt_weak_secret"),
        "{:?}",
        loaded.warnings
    );
    // And a 1024-bit RSA key is refused.
    let weak = r#"
upstreams: {app: {builtin: echo}}
authenticators:
  i: {type: jwt, keys_file: rsa1024.pub.pem, audience: x}
routes:
  - {name: r, match: {path_prefix: /}, upstream: app, auth: [i]}
"#;
    let errors = keyway::pipeline::compile::load_str(weak, &dir)
        .err()
        .expect("weak RSA refused");
    assert!(
        errors.iter().any(|e| e.message.contains("1024 bits")),
        "{errors:?}"
    );
}
