//! The service for one proxied request: the pipeline's stages in order, the answer, and the
//! record of it (access log, metrics, decision log) — the one place the pipeline meets the
//! running gateway (`App`), its open WebSockets and its multiplexer.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{Request, Response, header};
use hyper::body::Incoming;

use crate::app::App;
use crate::oidc::Conn;
use crate::pipeline::answer::{self, Answer};
use crate::pipeline::body::Body;
use crate::pipeline::headers::{Client, Peer};
use crate::pipeline::trace::Trace;
use crate::pipeline::unauthenticated::Mode;
use crate::pipeline::{Prepared, admit, decide_route, echo, endpoints, prepare, refusal};
use crate::pipeline::{request_id, upstream};
use crate::websocket;

/// Serves one proxied request and records it.
///
/// The work before the first await runs here rather than in an async fn, and the stages after
/// the decision hand the request on by value: each async fn would keep its own copy of the
/// request in the future hyper holds for every connection.
pub fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    client: Arc<Client>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static {
    let rt = app.runtime();
    let upgrade = upstream::is_upgrade(&req);
    let (mut parts, body) = req.into_parts();
    let mut trace = Trace::of_request(&parts, false);
    let conn = Conn {
        tls: client.tls,
        trusted: rt.is_trusted(client.ip),
    };
    async move {
        // A labelled block rather than an async fn: the request moves on by value without a
        // second copy in another future.
        let result: Result<Response<Body>, Answer> = 'answer: {
            if let Err(answer) = admit(&rt, &mut parts, conn, &mut trace) {
                break 'answer Err(answer);
            }
            if let Some(endpoint) = rt.endpoints.find(parts.uri.path()) {
                // Boxed: forward-auth runs the deciding stages again inside, and every
                // request's future would otherwise carry that size.
                let serve = endpoints::serve(endpoint, &rt, &mut parts, body, conn, &mut trace);
                break 'answer Err(Box::pin(serve).await);
            }
            let decided = decide_route(&rt, &mut parts, upgrade, conn, Mode::Proxy, &mut trace);
            let mut decision = match decided.await {
                Ok(decision) => decision,
                Err(answer) => break 'answer Err(answer),
            };
            if decision.route.mux.is_some() {
                break 'answer websocket::mux::accept(
                    &app, &rt, &client, decision, parts, conn, &mut trace,
                );
            }
            let cookies = std::mem::take(&mut decision.cookies);
            let watch = upgrade.then(|| websocket::relay::watch(&decision, &parts));
            if watch
                .as_ref()
                .is_some_and(websocket::relay::Watch::frame_aware)
            {
                // keyway reads the frames: no extension it does not speak (permessage-deflate).
                parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
            }
            let peer = Peer {
                client: &client,
                trusted: conn.trusted,
            };
            let forwarded = match prepare(decision, &rt, &mut parts, peer, &mut trace) {
                Prepared::Answered(response) => Ok((response, None)),
                // An incomplete handshake (no key) gets the echo's description, as HTTP.
                Prepared::EchoWebSocket(greeting) => Ok((
                    websocket::echo::accept(&app.tunnels, &mut parts, greeting)
                        .unwrap_or_else(echo::json),
                    None,
                )),
                Prepared::Mux => Err(Answer::from(refusal::Refusal::new(
                    crate::reason::Reason::MuxBadHandshake,
                    "A multiplexer route answers WebSocket handshakes only.",
                ))),
                Prepared::Forward { route, pool } => upstream::forward(
                    &route.upstream,
                    &pool,
                    Request::from_parts(parts, body),
                    upgrade,
                    client.request_timer(),
                    &mut trace,
                )
                .await
                .map_err(Answer::from),
            };
            match forwarded {
                Ok((mut response, tunnel)) => {
                    // A renewed session reaches the browser on the upstream's answer.
                    for cookie in cookies {
                        response.headers_mut().append(header::SET_COOKIE, cookie);
                    }
                    if let (Some(tunnel), Some(watch)) = (tunnel, watch) {
                        let context = websocket::relay::Context {
                            request_id: trace.request_id.clone(),
                            route: trace.route.clone(),
                            app: app.clone(),
                            log: rt.access_log.is_some(),
                        };
                        websocket::relay::spawn(&app.tunnels, tunnel, watch, context);
                    }
                    Ok(response)
                }
                Err(answer) => Err(answer),
            }
        };
        let mut response = match result {
            Ok(response) => response,
            Err(answer) => answer::render(answer, &mut trace, rt.detail),
        };
        // The same value went to the upstream.
        response.headers_mut().insert(
            request_id::X_REQUEST_ID.clone(),
            trace.request_id.header_value().clone(),
        );
        trace.status = response.status().as_u16();
        app.record(&trace, &rt);
        // Every request is answered: refusals are responses too.
        Ok(response)
    }
}
