//! The decision page (`GET /` on the admin listener): plain HTML, CSS and a little JavaScript
//! embedded in the binary, no build step and nothing fetched from elsewhere. The style and the
//! script are inlined and allowed by their hashes, so the Content-Security-Policy forbids every
//! other script, style and origin.

use std::sync::OnceLock;

use base64::Engine as _;
use http::{HeaderValue, Response, header};
use sha2::{Digest, Sha256};

use crate::pipeline::body::Body;

const HTML: &str = include_str!("page.html");
const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

struct Page {
    html: String,
    csp: Option<HeaderValue>,
}

fn page() -> &'static Page {
    static PAGE: OnceLock<Page> = OnceLock::new();
    PAGE.get_or_init(|| {
        let html = HTML
            .replace("/*CSS*/", CSS)
            .replace("/*JS*/", JS);
        let hash = |text: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text));
        let csp = format!(
            "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
            hash(JS),
            hash(CSS)
        );
        Page {
            html,
            csp: HeaderValue::from_str(&csp).ok(),
        }
    })
}

pub fn response() -> Response<Body> {
    let page = page();
    let mut r = Response::new(Body::full(page.html.clone()));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(csp) = &page.csp {
        h.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained() {
        let html = &page().html;
        assert!(html.contains("setInterval(poll, 1000)"));
        assert!(html.contains("--accent"));
        assert!(!html.contains("/*JS*/") && !html.contains("/*CSS*/"));
        // Nothing from another origin.
        for needle in ["http://", "https://", "//cdn", "@import"] {
            let outside = html
                .match_indices(needle)
                .filter(|(i, _)| !html[..*i].ends_with("placeholder=\""));
            assert_eq!(outside.count(), 0, "{needle}");
        }
    }
}
