//! keyway's own outgoing HTTP requests (control traffic, not proxied requests): JWKS documents,
//! OpenID discovery, the token endpoint. Bounded in time and size, never following redirects,
//! and with error messages that name the URL (without its query) but never a request's form
//! values, which carry client secrets, codes and refresh tokens. `https://` URLs are verified
//! against the system's CA store (`SSL_CERT_FILE` / `SSL_CERT_DIR` point elsewhere).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::secret::Secret;

/// An answer read in full.
#[derive(Debug)]
pub struct Fetched {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Fetched {
    /// The body as JSON, or why it is not.
    pub fn json(&self, what: &str) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("{what} is not JSON: {e}"))
    }
}

#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    limit: usize,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The client TLS settings, read once.
fn tls_config() -> &'static Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| Arc::new(crate::trust::client_config(crate::trust::system_roots())))
}

/// `scheme://host/path` of a URL, for messages: a query can hold secrets.
pub fn label(url: &Uri) -> String {
    format!(
        "{}://{}{}",
        url.scheme_str().unwrap_or("http"),
        url.authority().map_or("", |a| a.as_str()),
        url.path()
    )
}

impl Fetcher {
    /// `timeout` bounds connecting and the whole exchange; `limit` the body's bytes.
    pub fn new(timeout: Duration, limit: usize) -> Fetcher {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config().as_ref().clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        // Requests every few minutes need no pool, and a pooled connection to an endpoint that
        // went away only adds a failure mode.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Fetcher {
            client,
            timeout,
            limit,
        }
    }

    pub async fn get(&self, url: &Uri, accept: &'static str) -> Result<Fetched, String> {
        let req = Request::get(url.clone())
            .header(header::ACCEPT, accept)
            .header(header::USER_AGENT, "keyway")
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("bad request to {}: {e}", label(url)))?;
        self.send(req, url, Method::GET).await
    }

    /// POSTs an `application/x-www-form-urlencoded` form, with HTTP Basic credentials when
    /// given (RFC 6749 §2.3.1: both parts form-encoded first).
    pub async fn post_form(
        &self,
        url: &Uri,
        form: &[(&str, &str)],
        basic: Option<(&str, &Secret<String>)>,
    ) -> Result<Fetched, String> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = Request::post(url.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "keyway");
        if let Some((user, password)) = basic {
            use base64::Engine;
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(user), enc(password.expose()));
            let credentials = base64::engine::general_purpose::STANDARD.encode(pair);
            let mut value = HeaderValue::from_str(&format!("Basic {credentials}"))
                .map_err(|_| format!("bad client credentials for {}", label(url)))?;
            value.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, value);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("bad request to {}: {e}", label(url)))?;
        self.send(req, url, Method::POST).await
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        url: &Uri,
        method: Method,
    ) -> Result<Fetched, String> {
        let what = format!("{method} {}", label(url));
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                let cause = std::error::Error::source(&e)
                    .map_or_else(|| e.to_string(), ToString::to_string);
                format!("{what} failed: {cause}")
            })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), self.limit)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|e| format!("reading the answer to {what} failed: {e}"))?;
            Ok(Fetched { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("{what} timed out after {:?}", self.timeout))?
    }
}
