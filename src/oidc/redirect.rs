//! Where keyway may send a browser after sign-in or sign-out (`rd`): a path on the same site,
//! or an absolute URL on a host the config allows. Anything else would make keyway an open
//! redirect, the classic way to lend a phishing link a trusted domain.

/// A host a redirect may name: exact, or every subdomain of `*.example.com`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `.example.com` for `*.example.com`.
    Suffix(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.trim().to_ascii_lowercase();
        let valid = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
                && !h.starts_with('.')
                && !h.contains("..")
        };
        match lower.strip_prefix("*.") {
            Some(rest) if valid(rest) => Ok(HostPattern::Suffix(format!(".{rest}"))),
            None if valid(&lower) => Ok(HostPattern::Exact(lower)),
            _ => Err(format!(
                "{text:?} is not a host name or *.domain pattern (no scheme, port or path)"
            )),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// `rd` if it is safe to redirect to, else `None` (the caller falls back to `/`).
///
/// A relative target must be a path on this site: it starts with one `/` and is not `//host` or
/// `/\host` (browsers read both as another host). An absolute target must be http or https, carry
/// no userinfo (`https://trusted@evil`), and name an allowed host. Backslashes, whitespace and
/// control characters are refused anywhere: browsers drop or reinterpret them while parsing.
pub fn safe_target(rd: &str, allowed: &[HostPattern]) -> Option<String> {
    if rd.is_empty()
        || rd
            .bytes()
            .any(|b| b == b'\\' || b.is_ascii_whitespace() || b.is_ascii_control() || b >= 0x80)
    {
        return None;
    }
    if let Some(rest) = rd.strip_prefix('/') {
        return (!rest.starts_with('/')).then(|| rd.to_owned());
    }
    let uri: http::Uri = rd.parse().ok()?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return None;
    }
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    allowed
        .iter()
        .any(|p| p.matches(&host))
        .then(|| rd.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_site_paths_and_allowed_hosts_pass() {
        let allowed = [
            HostPattern::parse("app.example.com").unwrap(),
            HostPattern::parse("*.corp.example").unwrap(),
        ];
        for ok in [
            "/",
            "/dashboard?tab=1",
            "/a/b#frag",
            "/%2F%2Fevil.example",
            "https://app.example.com/x",
            "http://APP.example.com:8443/x",
            "https://wiki.corp.example/page",
            "https://a.b.corp.example/",
        ] {
            assert_eq!(safe_target(ok, &allowed).as_deref(), Some(ok), "{ok}");
        }
    }

    #[test]
    fn open_redirects_are_refused() {
        let allowed = [HostPattern::parse("app.example.com").unwrap()];
        for bad in [
            "",
            "//evil.example",
            "//evil.example/path",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "https://evil.example",
            "https://app.example.com@evil.example/",
            "https://app.example.com.evil.example/",
            "https://evilapp.example.com/",
            "javascript:alert(1)",
            "data:text/html,hi",
            "ftp://app.example.com/",
            "evil.example",
            "https:/evil.example",
            "https:evil.example",
            "/caf\u{e9}",
            "https://corp.example/",
        ] {
            assert_eq!(safe_target(bad, &allowed), None, "{bad:?}");
        }
    }

    #[test]
    fn patterns_are_host_names() {
        assert!(HostPattern::parse("https://x.example").is_err());
        assert!(HostPattern::parse("x.example:443").is_err());
        assert!(HostPattern::parse("*.").is_err());
        assert_eq!(
            HostPattern::parse("*.Example.com").unwrap(),
            HostPattern::Suffix(".example.com".into())
        );
    }
}
