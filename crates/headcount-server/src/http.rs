//! The HTTP surface: the WebSocket endpoints and the plain pages around them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use headcount_protocol::Serializer;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::conn::Conn;
use crate::driver;
use crate::hub::Hub;
use crate::metrics::{Limit, Metrics};
use crate::session::Session;
use crate::ws::handshake::accept_key;

/// The routes of the service.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/realtime/v1/websocket", get(websocket))
        .route("/socket/websocket", get(websocket))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::demo::routes())
        .merge(crate::api::routes())
        .merge(crate::admin::routes())
        .with_state(hub)
}

/// `GET /readyz`: 200 while accepting traffic, 503 while draining.
async fn readyz(State(hub): State<Arc<Hub>>) -> Response {
    let cluster = hub.cluster.health();
    if !cluster.connected {
        let body = serde_json::json!({"status": "cluster unreachable", "detail": cluster.detail})
            .to_string();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
    }
    if hub.draining.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"draining"}"#,
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ready"}"#,
        )
            .into_response()
    }
}

/// `GET /metrics`: the Prometheus text format.
async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    let channels = hub.channels();
    let presences: usize = channels.iter().map(|c| c.counts().2).sum();
    let queued: usize = hub.conns().iter().map(|c| c.queued_bytes()).sum();
    let body = hub.metrics.render(&[
        (
            "headcount_connections",
            "Open WebSocket connections.",
            hub.conn_count() as f64,
        ),
        (
            "headcount_users",
            "Connections with at least one channel joined.",
            hub.users.load(Ordering::Relaxed) as f64,
        ),
        (
            "headcount_channels",
            "Channels with members on this node.",
            channels.len() as f64,
        ),
        (
            "headcount_presences",
            "Tracked presences (metas) on this node.",
            presences as f64,
        ),
        (
            "headcount_outbox_bytes",
            "Bytes queued for clients, not yet written.",
            queued as f64,
        ),
        (
            "headcount_draining",
            "1 while the server is shutting down.",
            f64::from(u8::from(hub.draining.load(Ordering::Relaxed))),
        ),
        (
            "headcount_cluster_connected",
            "1 while the node reaches its cluster backend (always 1 standalone).",
            f64::from(u8::from(hub.cluster.health().connected)),
        ),
    ]);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// A refused upgrade, counted and logged at the default level with the peer's address and the
/// reason (never the token: `reason` is one of our own strings), so an operator can see why a
/// client cannot connect.
fn refuse(
    hub: &Hub,
    remote: Option<SocketAddr>,
    status: StatusCode,
    message: &str,
    reason: &str,
) -> Response {
    Metrics::inc(&hub.metrics.connections_refused_total);
    let remote = remote.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    info!(%remote, status = status.as_u16(), reason, "refused a WebSocket upgrade");
    if status == StatusCode::FORBIDDEN && message.is_empty() {
        return status.into_response();
    }
    json_error(status, message)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `GET /realtime/v1/websocket` and `GET /socket/websocket`: checks the serializer and the
/// apikey as Supabase does (403 for an unknown `vsn`, 401 with a JSON error for a bad key),
/// then upgrades.
async fn websocket(
    State(hub): State<Arc<Hub>>,
    Query(params): Query<HashMap<String, String>>,
    mut req: Request,
) -> Response {
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let Some(serializer) = Serializer::from_vsn(params.get("vsn").map(String::as_str)) else {
        return refuse(&hub, remote, StatusCode::FORBIDDEN, "", "unsupported vsn");
    };
    let headers = req.headers();
    let apikey = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| params.get("apikey").cloned());
    let Some(apikey) = apikey else {
        let reason = "API key is missing";
        return refuse(&hub, remote, StatusCode::UNAUTHORIZED, reason, reason);
    };
    if let Some(origin) = headers.get(header::ORIGIN)
        && !hub.config.allowed_origins.is_empty()
        && !hub
            .config
            .allowed_origins
            .iter()
            .any(|o| o.as_bytes() == origin.as_bytes())
    {
        // The origin is logged so an operator can see which entry is missing.
        let reason = format!(
            "Origin not allowed: {}",
            String::from_utf8_lossy(origin.as_bytes())
        );
        return refuse(
            &hub,
            remote,
            StatusCode::FORBIDDEN,
            "Origin not allowed",
            &reason,
        );
    }
    let claims = match hub.config.verifier.verify(&apikey, crate::clock::unix_s()) {
        Ok(claims) => claims,
        Err(e) => {
            let reason = e.to_string();
            return refuse(
                &hub,
                remote,
                StatusCode::UNAUTHORIZED,
                e.connect_error(),
                &reason,
            );
        }
    };
    let limits = &hub.config.limits;
    if limits
        .max_concurrent_users
        .is_some_and(|max| hub.users.load(Ordering::Relaxed) >= max)
    {
        hub.metrics.refused(Limit::Users);
        let reason = "Too many connected users";
        return refuse(&hub, remote, StatusCode::TOO_MANY_REQUESTS, reason, reason);
    }
    if hub.joins.is_full(hub.clock.ms()) {
        hub.metrics.refused(Limit::Joins);
        let reason = "Too many joins per second";
        return refuse(&hub, remote, StatusCode::TOO_MANY_REQUESTS, reason, reason);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| accept_key(k.as_bytes()));
    let is_upgrade = req.method() == Method::GET
        && header_has_token(headers, header::CONNECTION, "upgrade")
        && header_has_token(headers, header::UPGRADE, "websocket");
    let (true, Some(accept)) = (is_upgrade, key) else {
        return (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade").into_response();
    };
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(header::SEC_WEBSOCKET_VERSION, "13")],
        )
            .into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    Metrics::inc(&hub.metrics.connections_total);
    let token = crate::auth::clean_token(&apikey);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let conn = Arc::new(
                    Conn::new(
                        hub.next_id(),
                        serializer,
                        hub.config.outbox_limit,
                        hub.clock.now(),
                    )
                    .with_hard_limit(hub.config.outbox_hard_limit)
                    .with_identity(claims.role, claims.sub)
                    .with_metrics(hub.metrics.clone()),
                );
                let session = Session::new(hub.clone(), conn.clone(), token);
                match upgraded.downcast::<TokioIo<TcpStream>>() {
                    Ok(parts) => {
                        let (read, write) = parts.io.into_inner().into_split();
                        driver::run(hub, conn, session, read, write, parts.read_buf).await;
                    }
                    Err(upgraded) => {
                        let (read, write) = tokio::io::split(TokioIo::new(upgraded));
                        driver::run(hub, conn, session, read, write, Bytes::new()).await;
                    }
                }
            }
            Err(e) => debug!(error = %e, "upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(axum::body::Body::empty())
        .expect("a valid response")
}

/// Serves HTTP on one accepted TCP connection until it ends, is upgraded, or the server stops.
/// Every request carries the peer's address as a [`ConnectInfo`] extension.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let app = tower::util::MapRequest::new(app, move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let service = TowerToHyperService::new(app);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
