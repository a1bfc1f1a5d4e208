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
use serde_json::{Map, Value, json};
use tracing::debug;

use crate::auth::Claims;
use crate::driver;
use crate::hub::{Broadcast, ChannelKey, Hub};
use crate::metrics::{Limit, Metrics};

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
    let now = (driver::now_ms() / 1000) as i64;
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
    let now = driver::now_ms();
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

/// One message of a batch, before validation: every field optional, so that what is missing
/// can be reported field by field, as Supabase's changeset does.
#[derive(serde::Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow, default)]
    topic: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    private: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct RawBatch<'a> {
    #[serde(borrow, default)]
    messages: Option<Vec<RawMessage<'a>>>,
}

/// A valid message of a batch.
struct Message<'a> {
    topic: String,
    event: String,
    payload: &'a str,
    private: bool,
    id: String,
}

const BLANK: &str = "can't be blank";
const INVALID: &str = "is invalid";
const TOO_BIG: &str = "Payload size exceeds tenant limit";

/// A non-empty string field.
fn required_string(
    raw: Option<&RawValue>,
    name: &str,
    errors: &mut Map<String, Value>,
) -> Option<String> {
    let mut fail = |text: &str| {
        errors.insert(name.to_owned(), json!([text]));
        None
    };
    match raw.map(|r| serde_json::from_str::<Value>(r.get())) {
        None | Some(Ok(Value::Null)) => fail(BLANK),
        Some(Ok(Value::String(s))) if s.trim().is_empty() => fail(BLANK),
        Some(Ok(Value::String(s))) => Some(s),
        _ => fail(INVALID),
    }
}

/// Checks one message of a batch; the errors go under the field names.
fn validate<'a>(raw: &RawMessage<'a>, max_payload: usize) -> Result<Message<'a>, Value> {
    let mut errors = Map::new();
    let topic = required_string(raw.topic, "topic", &mut errors);
    let event = required_string(raw.event, "event", &mut errors);
    let payload = match raw.payload.map(RawValue::get) {
        None | Some("null") => {
            errors.insert("payload".into(), json!([BLANK]));
            None
        }
        Some(p) if !p.starts_with('{') => {
            errors.insert("payload".into(), json!([INVALID]));
            None
        }
        Some(p) if p.len() > max_payload => {
            errors.insert("payload".into(), json!([TOO_BIG]));
            None
        }
        Some(p) => Some(p),
    };
    let private = match raw.private.map(RawValue::get) {
        None | Some("null") | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            errors.insert("private".into(), json!([INVALID]));
            false
        }
    };
    let id = match raw.id.map(|r| serde_json::from_str::<Value>(r.get())) {
        None | Some(Ok(Value::Null)) => Some(uuid::Uuid::new_v4().to_string()),
        Some(Ok(Value::String(s))) => match uuid::Uuid::parse_str(&s) {
            Ok(u) => Some(u.hyphenated().to_string()),
            Err(_) => None,
        },
        _ => None,
    };
    if id.is_none() {
        errors.insert("id".into(), json!([INVALID]));
    }
    match (topic, event, payload, id) {
        (Some(topic), Some(event), Some(payload), Some(id)) if errors.is_empty() => Ok(Message {
            topic,
            event,
            payload,
            private,
            id,
        }),
        _ => Err(Value::Object(errors)),
    }
}

fn unprocessable(errors: Value) -> Response {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({ "errors": errors }).to_string(),
    )
}

/// `POST /api/broadcast`: a batch of JSON messages, each to its own channel.
///
/// 202 (empty) when accepted; 401 without a valid token; 400 when the body is not JSON; 422
/// with `{"errors":{"messages":[{field: [reason]}, ...]}}` (one object per message, empty for
/// valid ones) when any message is invalid, and then nothing is sent; 429 when the client's
/// or the node's events per second would be exceeded. Private messages the token may not write are skipped.
async fn batch(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Body) -> Response {
    let Some(claims) = request_claims(&hub, &headers) else {
        return unauthorized();
    };
    let max_payload = hub.config.limits.max_payload_bytes();
    let limit = hub
        .config
        .max_message_size
        .max(max_payload.saturating_add(BODY_SLACK));
    let Some(body) = read_body(body, limit).await else {
        return too_large();
    };
    let Ok(parsed) = serde_json::from_slice::<RawBatch<'_>>(&body) else {
        return bad_json();
    };
    let raw = match parsed.messages {
        Some(m) if !m.is_empty() => m,
        _ => return unprocessable(json!({ "messages": [BLANK] })),
    };
    let results: Vec<_> = raw.iter().map(|m| validate(m, max_payload)).collect();
    if results.iter().any(Result::is_err) {
        if results
            .iter()
            .any(|r| matches!(r, Err(e) if e.get("payload") == Some(&json!([TOO_BIG]))))
        {
            hub.metrics.refused(Limit::PayloadSize);
        }
        let per_message: Vec<Value> = results
            .into_iter()
            .map(|r| r.err().unwrap_or_else(|| json!({})))
            .collect();
        return unprocessable(json!({ "messages": per_message }));
    }
    let messages: Vec<Message<'_>> = results
        .into_iter()
        .filter_map(Result::ok)
        .filter(|m| {
            let allowed = may_write(&hub, &m.topic, m.private, &claims);
            if !allowed {
                debug!(topic = %m.topic, "skipped a private HTTP broadcast without write permission");
            }
            allowed
        })
        .collect();
    let limits = &hub.config.limits;
    let most = match (
        limits.max_events_per_second,
        limits.client_events_per_second(),
    ) {
        (Some(node), Some(client)) => Some(node.min(client)),
        (node, client) => node.or(client),
    };
    if most.is_some_and(|max| messages.len() > max as usize) {
        hub.metrics.refused(Limit::Events);
        return message(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many messages to broadcast, please reduce the batch size",
        );
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
/// above the payload limit; 403 for a private channel the token may not write; 429 when the
/// client's or the node's events per second are exceeded. JSON goes out as a text broadcast with a
/// `meta.id`; bytes as a binary user broadcast, which only 2.0.0 members can receive.
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
    match kind {
        BodyKind::Json => {
            // Checked above: the body is one JSON value, and JSON is UTF-8.
            let payload = std::str::from_utf8(&body).unwrap_or("null").trim();
            let id = uuid::Uuid::new_v4().to_string();
            let json = json_broadcast(&event, payload, &id);
            deliver(&hub, &key, Broadcast::Json(&json));
        }
        BodyKind::Bytes => deliver(
            &hub,
            &key,
            Broadcast::User {
                event: &event,
                encoding: Encoding::Binary,
                body: &body,
            },
        ),
    }
    StatusCode::ACCEPTED.into_response()
}

fn unauthorized_private() -> Response {
    message(StatusCode::FORBIDDEN, "Unauthorized")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawBatch<'_> {
        serde_json::from_str(text).unwrap()
    }

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
    fn validation_reports_each_field_as_supabase_does() {
        let b = raw(
            r#"{"messages":[{"payload":{}},{"topic":"t","event":"e","payload":[1]},{"topic":1,"event":"","payload":null,"private":"yes","id":"nope"}]}"#,
        );
        let errs: Vec<Value> = b
            .messages
            .unwrap()
            .iter()
            .map(|m| validate(m, 100).err().unwrap())
            .collect();
        assert_eq!(
            errs,
            vec![
                json!({"topic": [BLANK], "event": [BLANK]}),
                json!({"payload": [INVALID]}),
                json!({"topic": [INVALID], "event": [BLANK], "payload": [BLANK], "private": [INVALID], "id": [INVALID]}),
            ]
        );
    }

    #[test]
    fn a_valid_message_keeps_its_id_or_gets_one() {
        let b = raw(
            r#"{"messages":[{"topic":"t","event":"e","payload":{"a":1},"private":true,"id":"6F9619FF-8B86-D011-B42D-00CF4FC964FF"},{"topic":"t","event":"e","payload":{}}]}"#,
        );
        let m = b.messages.unwrap();
        let first = validate(&m[0], 100).ok().unwrap();
        assert_eq!(
            (first.private, first.id.as_str(), first.payload),
            (true, "6f9619ff-8b86-d011-b42d-00cf4fc964ff", r#"{"a":1}"#)
        );
        let second = validate(&m[1], 100).ok().unwrap();
        assert!(uuid::Uuid::parse_str(&second.id).is_ok());
        assert!(!second.private);
    }

    #[test]
    fn the_payload_limit_is_in_bytes_of_json() {
        let b = raw(r#"{"messages":[{"topic":"t","event":"e","payload":{"k":"0123456789"}}]}"#);
        let m = b.messages.unwrap();
        assert!(validate(&m[0], 18).is_ok());
        assert_eq!(
            validate(&m[0], 17).err().unwrap(),
            json!({"payload": [TOO_BIG]})
        );
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
