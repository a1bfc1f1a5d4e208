//! The operator's view: a small JSON API and the page at `/admin` that draws it.
//!
//! Every `/admin/api/...` call needs a valid JWT whose `role` is `service_role`, in
//! `Authorization: Bearer` or the `apikey` header: 401 `{"message":"Unauthorized"}` without a
//! valid token, 403 `{"message":"Forbidden"}` for another role. The page itself holds no data
//! and needs no token to load; it asks the operator for the key and keeps it in the tab's
//! `sessionStorage`. Tokens are never echoed back.
//!
//! * `GET /admin/api/stats`: gauges and counters, sampled by the page for its rates and charts;
//! * `GET /admin/api/channels`: channels with member and presence counts;
//! * `GET /admin/api/channels/{topic}/presence[?private=true]`: one channel's presence state;
//! * `GET /admin/api/connections`: sockets, with their role and user;
//! * `POST /admin/api/disconnect`: closes the sockets of one connection id or one user.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tracing::info;

use crate::api::{json_response, message, request_claims};
use crate::conn::Conn;
use crate::hub::{ChannelKey, Hub};
use crate::reasons::Close;
use crate::ws::close_code;

/// The page, self-contained (inline CSS and JavaScript).
const PAGE: &str = include_str!("admin.html");

/// The role a token needs for the admin API.
pub const ADMIN_ROLE: &str = "service_role";

/// How many channels or connections a listing returns unless `?limit=` says otherwise.
const DEFAULT_LIMIT: usize = 1000;

/// The most a listing returns, whatever `?limit=` says.
const MAX_LIMIT: usize = 10_000;

/// The page and its API.
pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/admin", get(page))
        .route("/admin/", get(page))
        .route("/admin/api/stats", get(stats))
        .route("/admin/api/channels", get(channels))
        .route("/admin/api/channels/{topic}/presence", get(presence))
        .route("/admin/api/connections", get(connections))
        .route("/admin/api/disconnect", post(disconnect))
}

/// The 401 or 403 to answer, unless the request carries a service_role token.
fn refusal(hub: &Hub, headers: &HeaderMap) -> Option<Response> {
    match request_claims(hub, headers) {
        None => Some(message(StatusCode::UNAUTHORIZED, "Unauthorized")),
        Some(claims) if claims.role != ADMIN_ROLE => {
            Some(message(StatusCode::FORBIDDEN, "Forbidden"))
        }
        Some(_) => None,
    }
}

/// The value of `name` in a query string, undecoded (the parameters read here are plain).
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn limit(query: Option<&str>) -> usize {
    query_param(query, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LIMIT)
        .min(MAX_LIMIT)
}

/// The channel name without Supabase's `realtime:` prefix, as clients name it.
fn short_topic(topic: &str) -> &str {
    topic.strip_prefix("realtime:").unwrap_or(topic)
}

/// `GET /admin`: the page. No data in it, so no token needed to load it; it must not be
/// framed by other sites, nor fetch from anywhere but here.
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'",
            ),
        ],
        PAGE,
    )
        .into_response()
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// `GET /admin/api/stats`: what the node holds now, and its counters since start. Rates are
/// left to the reader: two samples and their `time_ms` give them.
async fn stats(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&hub, &headers) {
        return refused;
    }
    let channels = hub.channels();
    let (mut members, mut presence_keys, mut presences) = (0, 0, 0);
    for channel in &channels {
        let (m, k, p) = channel.counts();
        members += m;
        presence_keys += k;
        presences += p;
    }
    let m = &hub.metrics;
    let body = json!({
        "time_ms": crate::clock::unix_ms(),
        "connections": hub.conn_count(),
        "users": hub.users.load(Ordering::Relaxed),
        "channels": channels.len(),
        "members": members,
        "presence_keys": presence_keys,
        "presences": presences,
        "draining": hub.draining.load(Ordering::Relaxed),
        "connections_total": load(&m.connections_total),
        "connections_refused": load(&m.connections_refused_total),
        "joins": load(&m.joins_total),
        "join_errors": load(&m.join_errors_total),
        "messages_in": load(&m.messages_in_total),
        "messages_out": load(&m.messages_out_total),
        "messages_dropped": load(&m.messages_dropped_total),
        "broadcasts": load(&m.broadcasts_total),
        "presence_events": load(&m.presence_events_total),
        "bytes_in": load(&m.bytes_in_total),
        "bytes_out": load(&m.bytes_out_total),
        "slow_consumer_disconnects": load(&m.slow_consumer_disconnects_total),
    });
    json_response(StatusCode::OK, body.to_string())
}

/// `GET /admin/api/channels[?limit=N]`: the busiest channels first.
async fn channels(
    State(hub): State<Arc<Hub>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&hub, &headers) {
        return refused;
    }
    let all = hub.channels();
    let total = all.len();
    let mut rows: Vec<_> = all
        .iter()
        .map(|c| {
            let (members, keys, metas) = c.counts();
            (
                members,
                keys,
                metas,
                c.key.private,
                short_topic(&c.key.topic),
            )
        })
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.4.cmp(b.4)).then(a.3.cmp(&b.3)));
    let list: Vec<Value> = rows
        .into_iter()
        .take(limit(query.as_deref()))
        .map(|(members, keys, metas, private, topic)| {
            json!({
                "topic": topic,
                "private": private,
                "members": members,
                "presence_keys": keys,
                "presences": metas,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({ "total": total, "channels": list }).to_string(),
    )
}

/// `GET /admin/api/channels/{topic}/presence[?private=true]`: the state a joining member would
/// receive in `presence_state`.
async fn presence(
    State(hub): State<Arc<Hub>>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&hub, &headers) {
        return refused;
    }
    let private = query_param(query.as_deref(), "private") == Some("true");
    let key = |topic: String| ChannelKey {
        private,
        topic: topic.into(),
    };
    let channel = hub
        .channel(&key(format!("realtime:{topic}")))
        .or_else(|| hub.channel(&key(topic)));
    match channel {
        Some(channel) => json_response(StatusCode::OK, channel.presence_json().to_string()),
        None => message(StatusCode::NOT_FOUND, "Channel not found"),
    }
}

/// `GET /admin/api/connections[?limit=N]`: the oldest first.
async fn connections(
    State(hub): State<Arc<Hub>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&hub, &headers) {
        return refused;
    }
    let mut conns = hub.conns();
    let total = conns.len();
    conns.sort_by_key(|c| c.id);
    let list: Vec<Value> = conns
        .iter()
        .take(limit(query.as_deref()))
        .map(|c| {
            json!({
                "id": c.id,
                "role": c.role,
                "sub": c.sub,
                "presented_subs": c.presented.list(),
                "connected_at": c.connected_ms,
                "serializer": c.serializer.vsn(),
                "queued_bytes": c.queued_bytes(),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({ "total": total, "connections": list }).to_string(),
    )
}

/// Whether `conn` belongs to the user `sub`: its apikey's, or any token it presented since.
fn belongs_to(conn: &Conn, sub: &str) -> bool {
    conn.sub.as_deref() == Some(sub) || conn.presented.contains(sub)
}

/// Who to disconnect.
enum Target {
    Conn(u64),
    Sub(String),
}

fn target(body: &[u8]) -> Option<Target> {
    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let conn = o.get("conn").filter(|v| !v.is_null());
    let sub = o.get("sub").filter(|v| !v.is_null());
    match (conn, sub) {
        (Some(c), None) => c
            .as_u64()
            .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
            .map(Target::Conn),
        (None, Some(Value::String(s))) if !s.is_empty() => Some(Target::Sub(s.clone())),
        _ => None,
    }
}

/// `POST /admin/api/disconnect` with `{"conn": ID}` or `{"sub": "user-id"}`: closes those
/// sockets with 1008 and [`Close::Disconnected`]; answers `{"disconnected": N}`, the sockets this
/// call closed (one already closing is not counted again). A user's sockets are those whose
/// apikey, or any token presented in a join or a refresh, carries that `sub`. Clients reconnect
/// by themselves, so this is a nudge (a stale client, a token to re-check); keeping a user out
/// is the job of the keys and the policy.
async fn disconnect(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = refusal(&hub, &headers) {
        return refused;
    }
    let Some(target) = target(&body) else {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"errors": {"conn": ["give either conn (a connection id) or sub (a user id)"]}})
                .to_string(),
        );
    };
    let n = match &target {
        Target::Conn(id) => hub.disconnect(
            |c| c.id == *id,
            close_code::POLICY_VIOLATION,
            Close::Disconnected.as_str(),
        ),
        Target::Sub(sub) => hub.disconnect(
            |c| belongs_to(c, sub),
            close_code::POLICY_VIOLATION,
            Close::Disconnected.as_str(),
        ),
    };
    match &target {
        Target::Conn(id) => info!(conn = id, disconnected = n, "admin disconnect"),
        Target::Sub(_) => info!(disconnected = n, "admin disconnect of a user"),
    }
    json_response(StatusCode::OK, json!({ "disconnected": n }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_one_conn_or_one_sub() {
        assert!(matches!(target(br#"{"conn": 7}"#), Some(Target::Conn(7))));
        assert!(matches!(target(br#"{"conn": "7"}"#), Some(Target::Conn(7))));
        assert!(matches!(target(br#"{"sub": "u"}"#), Some(Target::Sub(s)) if s == "u"));
        for bad in [
            &br#"{}"#[..],
            br#"{"conn": 1, "sub": "u"}"#,
            br#"{"conn": -1}"#,
            br#"{"sub": ""}"#,
            br#"{"sub": 3}"#,
            b"[]",
            b"nope",
        ] {
            assert!(target(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn query_parameters_and_limits() {
        assert_eq!(
            query_param(Some("a=1&private=true"), "private"),
            Some("true")
        );
        assert_eq!(query_param(None, "private"), None);
        assert_eq!(limit(Some("limit=5")), 5);
        assert_eq!(limit(Some("limit=999999")), MAX_LIMIT);
        assert_eq!(limit(None), DEFAULT_LIMIT);
        assert_eq!(short_topic("realtime:room"), "room");
        assert_eq!(short_topic("phoenix"), "phoenix");
    }
}
