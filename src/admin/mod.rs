//! The admin listener (SPEC §10, §11): health, readiness, metrics, reload, explain, the recent
//! decisions and the decision page. `admin.token`, when set, guards everything but `/healthz`,
//! `/readyz` and the page's static shell (which holds no data and asks for the token).

pub mod decisions;
mod page;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::decisions::Filter;
use crate::app::App;
use crate::explain::{self, Asked};
use crate::pipeline::body::Body;

/// The largest `POST /explain` body read.
const MAX_EXPLAIN_BODY: usize = 64 * 1024;

pub async fn serve(listener: TcpListener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(&app, req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let rt = app.runtime();
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            let missing = rt.not_ready();
            return if missing.is_empty() {
                text(StatusCode::OK, "ready\n")
            } else {
                // What is missing, so an operator need not guess: a JWKS, an OIDC discovery.
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"ready": false, "missing": missing}),
                )
            };
        }
        // The page's shell: no data in it; its script sends the token with every request.
        (&Method::GET, "/") => return page::response(),
        _ => {}
    }
    if let Some(token) = &rt.admin.as_ref().and_then(|a| a.token.as_ref()) {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
            let mut r = text(StatusCode::UNAUTHORIZED, "admin token required\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"keyway-admin\""),
            );
            return r;
        }
    }
    match (req.method(), path) {
        (&Method::GET, "/metrics") => {
            // OpenMetrics for whoever asks for it (Prometheus does), the classic text format
            // for everyone else (curl, promtool).
            let open_metrics = req.headers().get_all(header::ACCEPT).iter().any(|v| {
                v.as_bytes()
                    .windows(24)
                    .any(|w| w == b"application/openmetrics-")
            });
            let (body, content_type) = if open_metrics {
                (
                    app.metrics.render(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                (
                    app.metrics.render_classic(),
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            };
            let mut r = text(StatusCode::OK, &body);
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        (&Method::POST, "/reload") => match app.reload() {
            Ok(warnings) => {
                json_response(StatusCode::OK, &json!({"errors": [], "warnings": warnings}))
            }
            Err(errors) => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"errors": errors, "warnings": []}),
            ),
        },
        (&Method::GET, "/decisions") => decisions(app, req.uri().query()),
        (&Method::POST, "/explain") => explain(app, req).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `GET /decisions?limit=N&reason=R&route=NAME`: newest first, at most 1,000 (default 100).
fn decisions(app: &App, query: Option<&str>) -> Response<Body> {
    let mut limit = 100;
    let (mut reason, mut route) = (None, None);
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "limit" => match v.parse::<usize>() {
                Ok(n) => limit = n.min(decisions::CAPACITY),
                Err(_) => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "limit must be a number"}),
                    );
                }
            },
            "reason" => reason = Some(v.into_owned()),
            "route" => route = Some(v.into_owned()),
            _ => {}
        }
    }
    let recent = app.decisions.recent(&Filter {
        limit,
        reason: reason.as_deref(),
        route: route.as_deref(),
    });
    let epoch = app.decisions.epoch();
    let shown: Vec<_> = recent.iter().map(|d| d.shown(epoch)).collect();
    let mut r = Response::new(Body::full(serde_json::to_vec(&shown).unwrap_or_default()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /explain`: `{"method","url","headers":{...},"cookies":{...}}` answered with exactly
/// what `keyway explain --json` prints.
async fn explain(app: &App, req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_EXPLAIN_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": format!("the request body is over {MAX_EXPLAIN_BODY} bytes or could not be read")}),
            );
        }
    };
    let asked: Asked = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("expected {{\"method\",\"url\",\"headers\":{{...}},\"cookies\":{{...}}}}: {e}")}),
            );
        }
    };
    let rt = app.runtime();
    match explain::explain(&rt, &asked, explain::Where::Serving).await {
        Ok(report) => {
            let mut r = Response::new(Body::full(Bytes::from(
                serde_json::to_vec(&report).unwrap_or_default(),
            )));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({"error": e})),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Body::full(body.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::full(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
