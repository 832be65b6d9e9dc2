//! Browser or API (SPEC §6.2): is an unauthenticated request a person's navigation, to be sent
//! to sign in, or a program's call, to be answered with a status? Guessing wrong the one way is
//! F4 (an API client redirected to a login page), so only a request that looks like a
//! navigation on every count is one.

use http::request::Parts;
use http::{Method, header};

/// The verdict and the rule that made it, for the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub navigation: bool,
    pub rule: &'static str,
}

const fn api(rule: &'static str) -> Verdict {
    Verdict {
        navigation: false,
        rule,
    }
}

/// `token_presented`: some source of the route's authenticators held a credential (a bearer
/// token, an API key), valid or not.
pub fn classify(parts: &Parts, token_presented: bool) -> Verdict {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return api("not GET or HEAD: an API call");
    }
    let headers = &parts.headers;
    if headers.contains_key(header::AUTHORIZATION) {
        return api("Authorization header present: an API call");
    }
    if token_presented {
        return api("a credential was presented: an API call");
    }
    if headers.contains_key("x-requested-with") {
        return api("X-Requested-With present: a script's call");
    }
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return api("gRPC content type: an API call");
    }
    if let Some(mode) = headers.get("sec-fetch-mode") {
        return if mode.as_bytes().eq_ignore_ascii_case(b"navigate") {
            Verdict {
                navigation: true,
                rule: "Sec-Fetch-Mode: navigate",
            }
        } else {
            api("Sec-Fetch-Mode is not navigate: a script's call")
        };
    }
    if prefers_html(headers.get_all(header::ACCEPT).iter().map(|v| v.as_bytes())) {
        Verdict {
            navigation: true,
            rule: "no Sec-Fetch-Mode; Accept names text/html with the highest q-value",
        }
    } else {
        api("no Sec-Fetch-Mode, and Accept does not name text/html first (wildcards do not count)")
    }
}

/// Whether `text/html` is named explicitly with a q-value above 0 and no named media range has
/// a higher one (RFC 9110 §12.5.1). Wildcards name no type: `*/*` alone is not a browser.
fn prefers_html<'a>(values: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut html: Option<f32> = None;
    let mut best_other = 0.0f32;
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else {
            return false;
        };
        for range in text.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            if media.is_empty() {
                continue;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if media.eq_ignore_ascii_case("text/html") {
                html = Some(html.map_or(q, |h: f32| h.max(q)));
            } else if !media.contains('*') {
                best_other = best_other.max(q);
            }
        }
    }
    html.is_some_and(|h| h > 0.0 && h >= best_other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(method: &str, headers: &[(&str, &str)], token: bool) -> Verdict {
        let mut req = http::Request::builder().method(method).uri("/app");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        classify(&req.body(()).unwrap().into_parts().0, token)
    }

    const CHROME_ACCEPT: &str =
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

    #[test]
    fn navigations() {
        assert!(verdict("GET", &[("sec-fetch-mode", "navigate")], false).navigation);
        assert!(verdict("HEAD", &[("Sec-Fetch-Mode", "NAVIGATE")], false).navigation);
        // An older browser: no Sec-Fetch-Mode, text/html first.
        assert!(verdict("GET", &[("accept", CHROME_ACCEPT)], false).navigation);
        assert!(verdict("GET", &[("accept", "text/html")], false).navigation);
        assert!(
            verdict(
                "GET",
                &[("accept", "application/json;q=0.5, text/html")],
                false
            )
            .navigation
        );
    }

    #[test]
    fn api_calls() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            ("POST", &[("sec-fetch-mode", "navigate")], false),
            (
                "GET",
                &[
                    ("sec-fetch-mode", "navigate"),
                    ("authorization", "Bearer x"),
                ],
                false,
            ),
            ("GET", &[("sec-fetch-mode", "navigate")], true),
            (
                "GET",
                &[
                    ("sec-fetch-mode", "navigate"),
                    ("x-requested-with", "XMLHttpRequest"),
                ],
                false,
            ),
            (
                "GET",
                &[
                    ("accept", CHROME_ACCEPT),
                    ("content-type", "application/grpc-web+proto"),
                ],
                false,
            ),
            (
                "GET",
                &[("sec-fetch-mode", "cors"), ("accept", CHROME_ACCEPT)],
                false,
            ),
            ("GET", &[("sec-fetch-mode", "no-cors")], false),
            // curl, a missing Accept, wildcards only.
            ("GET", &[("accept", "*/*")], false),
            ("GET", &[], false),
            ("GET", &[("accept", "text/*")], false),
            // JSON preferred, html only as a fallback; html refused.
            (
                "GET",
                &[("accept", "application/json, text/html;q=0.9")],
                false,
            ),
            ("GET", &[("accept", "text/html;q=0")], false),
            (
                "GET",
                &[("accept", "application/json, text/plain, */*")],
                false,
            ),
        ];
        for (method, headers, token) in cases {
            let v = verdict(method, headers, *token);
            assert!(!v.navigation, "{method} {headers:?} {token}: {v:?}");
        }
    }
}
