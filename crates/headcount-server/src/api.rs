//! Broadcast over HTTP, as Supabase Realtime offers it: a backend (or a page that has not
//! joined a channel) sends to a channel's members without opening a socket.
//!
//! * `POST /api/broadcast` (batch): `{"messages":[{"topic","event","payload","private","id"}]}`;
//!   realtime-js's `channel.send()` falls back to it while the channel is not joined.
//! * `POST /api/broadcast/{topic}/events/{event}` (single): the body is the payload itself,
//!   `application/json` or `application/octet-stream`; realtime-js's `channel.httpSend()`.
//!
//! Both are also served under `/realtime/v1/...`, the path supabase-js uses, so the server
//! works with or without a gateway in front. Topics are given without `realtime:`. Statuses and
//! bodies are Supabase's (`reference/supabase-realtime-protocol.md` §6.3), so clients that
//! match on them keep working. CORS is open, as in Supabase: browsers call these endpoints from
//! any page, and the credentials are headers, never cookies.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use headcount_protocol::Encoding;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tracing::debug;

use crate::auth::Claims;
use crate::hub::{Broadcast, ChannelKey, Hub};
use crate::metrics::{Limit, Metrics};

mod batch;
use batch::{
    BLANK, INVALID, Message, MessageLimits, RawBatch, Refusal, TOO_BIG, read_batch, topic_too_long,
};

/// Room above the payload limit for the rest of a request body (the batch envelope, topics,
/// events): a payload just over the limit gets Supabase's 422, a body far over it a 413
/// without being read to its end.
const BODY_SLACK: usize = 64 * 1024;

/// The broadcast routes; CORS applies to these only.
pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/realtime/v1/api/broadcast", post(batch).options(preflight))
        .route("/api/broadcast", post(batch).options(preflight))
        .route(
            "/realtime/v1/api/broadcast/{topic}/events/{event}",
            post(single).options(preflight),
        )
        .route(
            "/api/broadcast/{topic}/events/{event}",
            post(single).options(preflight),
        )
        // Bodies are read with the limit of the running configuration, below.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::map_response(open_cors))
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response()
}

/// Supabase's `{"message": ...}` error.
pub(crate) fn message(status: StatusCode, text: &str) -> Response {
    json_response(status, json!({ "message": text }).to_string())
}

fn unauthorized() -> Response {
    message(StatusCode::UNAUTHORIZED, "Unauthorized")
}

/// The token of a request, as Supabase picks it: `Authorization: Bearer <jwt>`, otherwise the
/// `apikey` header. Query parameters are never read: they end up in access logs.
pub(crate) fn request_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty());
    bearer.or_else(|| {
        headers
            .get("apikey")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
    })
}

/// The claims of the request's token, if it carries a valid one.
pub(crate) fn request_claims(hub: &Hub, headers: &HeaderMap) -> Option<Claims> {
    let token = request_token(headers)?;
    let now = crate::clock::unix_s();
    match hub.config.verifier.verify(token, now) {
        Ok(claims) => Some(claims),
        Err(e) => {
            debug!(error = %e, "refused an HTTP API token");
            None
        }
    }
}

/// Reads a body of at most `limit` bytes; `None` when it is larger (or broken off).
async fn read_body(body: Body, limit: usize) -> Option<Bytes> {
    axum::body::to_bytes(body, limit).await.ok()
}

fn too_large() -> Response {
    message(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large")
}

fn bad_json() -> Response {
    message(
        StatusCode::BAD_REQUEST,
        "The request body is not valid JSON",
    )
}

/// Adds the open CORS headers to every answer of these routes.
async fn open_cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    response
}

/// `OPTIONS`: the answer to a browser's preflight. The headers a page asks for are allowed
/// (the credentials are headers, never cookies, so nothing is gained by refusing them).
async fn preflight(headers: HeaderMap) -> Response {
    let allow_headers = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_static("authorization, apikey, content-type, x-client-info")
        });
    (
        StatusCode::NO_CONTENT,
        [
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, OPTIONS"),
            ),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers),
            (
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            ),
        ],
    )
        .into_response()
}

/// The channel a message goes to.
fn channel_key(topic: &str, private: bool) -> ChannelKey {
    ChannelKey {
        private,
        topic: format!("realtime:{topic}").into(),
    }
}

/// Whether the bearer of `claims` may send to the channel: public channels let everyone,
/// private ones whom the policy grants `broadcast:write`.
fn may_write(hub: &Hub, topic: &str, private: bool, claims: &Claims) -> bool {
    !private || hub.config.policy.evaluate(topic, claims).broadcast_write
}

/// Who an HTTP request counts against for the per-client events limit: the token's `sub`, or
/// the token itself when it has none (a service key, the anon key).
fn client_of<'a>(claims: &'a Claims, headers: &'a HeaderMap) -> &'a str {
    claims
        .sub
        .as_deref()
        .or_else(|| request_token(headers))
        .unwrap_or("")
}

/// Counts `n` messages against the client's events per second, then the node's; `false`
/// (nothing counted in excess) when they do not all fit.
fn take_events(hub: &Hub, client: &str, n: usize) -> bool {
    let now = hub.clock.ms();
    if !hub
        .http_clients
        .take(client, now, u32::try_from(n).unwrap_or(u32::MAX))
    {
        hub.metrics.refused(Limit::ClientEvents);
        return false;
    }
    for _ in 0..n {
        if !hub.events.hit(now) {
            hub.metrics.refused(Limit::Events);
            return false;
        }
    }
    true
}

fn rate_limited() -> Response {
    message(
        StatusCode::TOO_MANY_REQUESTS,
        "You have exceeded your rate limit",
    )
}

/// Sends one message; a channel with no members on this node still counts as a broadcast
/// received.
fn deliver(hub: &Hub, key: &ChannelKey, msg: Broadcast<'_>) {
    if !hub.broadcast_to(key, msg) {
        Metrics::inc(&hub.metrics.broadcasts_total);
    }
}

/// What members receive for a JSON message: built once, shared by every member.
fn json_broadcast(event: &str, payload: &str, id: &str) -> String {
    let event = Value::String(event.to_owned()).to_string();
    let mut out = String::with_capacity(payload.len() + event.len() + id.len() + 64);
    out.push_str("{\"event\":");
    out.push_str(&event);
    out.push_str(",\"payload\":");
    out.push_str(payload);
    out.push_str(",\"type\":\"broadcast\",\"meta\":{\"id\":\"");
    out.push_str(id);
    out.push_str("\"}}");
    out
}

fn unprocessable(errors: Value) -> Response {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({ "errors": errors }).to_string(),
    )
}

fn too_many_messages() -> Response {
    message(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many messages to broadcast, please reduce the batch size",
    )
}

/// `POST /api/broadcast`: a batch of JSON messages, each to its own channel.
///
/// 202 (empty) when accepted; 401 without a valid token; 413 for a body over the batch body
/// limit; 400 when the body is not JSON; 429 `Too many messages to broadcast, please reduce the
/// batch size` for more messages than the batch limit (or than the client's or the node's events per second);
/// 422 with `{"errors":{"messages":[{field: [reason]}, ...]}}` (one object per message, empty
/// for valid ones, up to the 100th invalid one) when any message is invalid, and then nothing
/// is sent; 429 `You have exceeded your rate limit` when the client's or the node's events per second are used
/// up. Private messages the token may not write are skipped.
///
/// The cost is linear in the body and small: the body, the valid messages read so far (at
/// most the batch limit of them, their payloads borrowed from the body), at most 100 small
/// error records, and one outgoing message at a time.
async fn batch(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Body) -> Response {
    let Some(claims) = request_claims(&hub, &headers) else {
        return unauthorized();
    };
    let config = &hub.config.limits;
    let limits = MessageLimits {
        max_payload: config.max_payload_bytes(),
        max_topic: config.max_topic_bytes,
    };
    let body_limit = config
        .max_batch_body_bytes
        .max(limits.max_payload.saturating_add(BODY_SLACK));
    let Some(body) = read_body(body, body_limit).await else {
        return too_large();
    };
    let Ok(parsed) = serde_json::from_slice::<RawBatch<'_>>(&body) else {
        return bad_json();
    };
    let Some(raw) = parsed.messages.filter(|m| m.get() != "null") else {
        return unprocessable(json!({ "messages": [BLANK] }));
    };
    let messages = match read_batch(raw, config.max_batch_messages, limits) {
        Ok(messages) if messages.is_empty() => {
            return unprocessable(json!({ "messages": [BLANK] }));
        }
        Ok(messages) => messages,
        Err(Refusal::TooMany) => {
            hub.metrics.refused(Limit::Events);
            return too_many_messages();
        }
        Err(Refusal::Shape) => return unprocessable(json!({ "messages": [INVALID] })),
        Err(Refusal::Invalid(reports)) => {
            if reports.payload_too_big() {
                hub.metrics.refused(Limit::PayloadSize);
            }
            return json_response(StatusCode::UNPROCESSABLE_ENTITY, reports.body());
        }
    };
    let messages: Vec<Message<'_>> = messages
        .into_iter()
        .filter(|m| {
            let allowed = may_write(&hub, &m.topic, m.private, &claims);
            if !allowed {
                debug!(topic = %m.topic, "skipped a private HTTP broadcast without write permission");
            }
            allowed
        })
        .collect();
    let most = match (
        config.max_events_per_second,
        config.client_events_per_second(),
    ) {
        (Some(node), Some(client)) => Some(node.min(client)),
        (node, client) => node.or(client),
    };
    if most.is_some_and(|max| messages.len() > max as usize) {
        hub.metrics.refused(Limit::Events);
        return too_many_messages();
    }
    if !take_events(&hub, client_of(&claims, &headers), messages.len()) {
        return rate_limited();
    }
    for m in &messages {
        let json = json_broadcast(&m.event, m.payload, &m.id);
        deliver(
            &hub,
            &channel_key(&m.topic, m.private),
            Broadcast::Json(&json),
        );
    }
    StatusCode::ACCEPTED.into_response()
}

/// The body kinds the single endpoint takes.
enum BodyKind {
    Json,
    Bytes,
}

fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Some(BodyKind::Json)
    } else if media.eq_ignore_ascii_case("application/octet-stream") {
        Some(BodyKind::Bytes)
    } else {
        None
    }
}

/// `POST /api/broadcast/{topic}/events/{event}[?private=true]`: one message whose body is the
/// payload. Other query parameters (realtime-js appends its socket's `apikey` and `vsn`) are
/// ignored.
///
/// 202 (empty) when accepted; 401 without a valid token; 415 for a body that is neither
/// `application/json` nor `application/octet-stream`; 400 for JSON that does not parse; 422
/// above the payload limit or for a topic over the topic limit; 403 for a private channel the
/// token may not write; 429 when the client's or the node's events per second are exceeded.
/// Either body goes out as a user broadcast: 2.0.0 members get a binary frame (kind 4, JSON or
/// binary encoding), 1.0.0 members a text broadcast of a JSON body and nothing of bytes.
async fn single(
    State(hub): State<Arc<Hub>>,
    Path((topic, event)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(claims) = request_claims(&hub, &headers) else {
        return unauthorized();
    };
    let Some(kind) = body_kind(&headers) else {
        return json_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"error": "Unsupported Media Type. Use application/json or application/octet-stream"})
                .to_string(),
        );
    };
    let max_topic = hub.config.limits.max_topic_bytes;
    if topic.len() > max_topic {
        return unprocessable(json!({ "topic": [topic_too_long(max_topic)] }));
    }
    let private = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|pair| pair == "private=true"));
    let max_payload = hub.config.limits.max_payload_bytes();
    let Some(body) = read_body(body, max_payload.saturating_add(BODY_SLACK)).await else {
        return too_large();
    };
    if matches!(kind, BodyKind::Json) && serde_json::from_slice::<&RawValue>(&body).is_err() {
        return bad_json();
    }
    if body.len() > max_payload {
        hub.metrics.refused(Limit::PayloadSize);
        return unprocessable(json!({ "payload": [TOO_BIG] }));
    }
    if !may_write(&hub, &topic, private, &claims) {
        return unauthorized_private();
    }
    if !take_events(&hub, client_of(&claims, &headers), 1) {
        return rate_limited();
    }
    let key = channel_key(&topic, private);
    // Both kinds go out as a user broadcast without metadata, as Supabase sends them: a binary
    // frame to 2.0.0 members; 1.0.0 members get a JSON body as a text broadcast and bytes not
    // at all.
    let encoding = match kind {
        BodyKind::Json => Encoding::Json,
        BodyKind::Bytes => Encoding::Binary,
    };
    let body = match kind {
        BodyKind::Json => body.trim_ascii(),
        BodyKind::Bytes => &body[..],
    };
    deliver(
        &hub,
        &key,
        Broadcast::User {
            event: &event,
            encoding,
            body,
        },
    );
    StatusCode::ACCEPTED.into_response()
}

fn unauthorized_private() -> Response {
    message(StatusCode::FORBIDDEN, "Unauthorized")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delivered_json_escapes_the_event_and_keeps_the_payload_bytes() {
        let out = json_broadcast("a\"b", r#"{"x": 1}"#, "id-1");
        assert_eq!(
            out,
            r#"{"event":"a\"b","payload":{"x": 1},"type":"broadcast","meta":{"id":"id-1"}}"#
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["event"], "a\"b");
    }

    #[test]
    fn the_token_comes_from_bearer_then_apikey() {
        let mut h = HeaderMap::new();
        assert_eq!(request_token(&h), None);
        h.insert("apikey", HeaderValue::from_static("k1"));
        assert_eq!(request_token(&h), Some("k1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(request_token(&h), Some("k1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer t2"));
        assert_eq!(request_token(&h), Some("t2"));
    }
}
