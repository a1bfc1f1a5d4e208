//! The WebSocket endpoint, built the way supabase-js and realtime-js build it.

use headcount_protocol::Serializer;

use crate::error::Error;

/// The endpoint without its query: `http(s)://host[/base]` becomes
/// `ws(s)://host[/base]/realtime/v1/websocket` (supabase-js's `realtime/v1` plus phoenix.js's
/// `/websocket`); a `ws(s)://` URL gets `/websocket` appended unless it already ends so (a bare
/// host gets `/realtime/v1/websocket`).
pub(crate) fn base(url: &str) -> Result<String, Error> {
    let url = url.trim();
    let invalid = || Error::InvalidUrl(url.to_owned());
    let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
    let (ws_scheme, http) = match scheme.to_ascii_lowercase().as_str() {
        "http" => ("ws", true),
        "https" => ("wss", true),
        "ws" => ("ws", false),
        "wss" => ("wss", false),
        _ => return Err(invalid()),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid());
    }
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() {
        "/realtime/v1/websocket".to_owned()
    } else if path.ends_with("/websocket") {
        path.to_owned()
    } else if http && !path.ends_with("/realtime/v1") {
        format!("{path}/realtime/v1/websocket")
    } else {
        format!("{path}/websocket")
    };
    Ok(format!("{ws_scheme}://{host}{path}"))
}

/// The full endpoint with `apikey` and `vsn`.
pub(crate) fn endpoint(url: &str, apikey: &str, serializer: Serializer) -> Result<String, Error> {
    Ok(format!(
        "{}?apikey={}&vsn={}",
        base(url)?,
        encode_component(apikey),
        serializer.vsn()
    ))
}

/// `encodeURIComponent`.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_get_the_realtime_path() {
        assert_eq!(
            base("http://127.0.0.1:4000").unwrap(),
            "ws://127.0.0.1:4000/realtime/v1/websocket"
        );
        assert_eq!(
            base("https://abcd.supabase.co/").unwrap(),
            "wss://abcd.supabase.co/realtime/v1/websocket"
        );
        assert_eq!(
            base("https://example.com/base").unwrap(),
            "wss://example.com/base/realtime/v1/websocket"
        );
        assert_eq!(
            base("http://h/realtime/v1").unwrap(),
            "ws://h/realtime/v1/websocket"
        );
    }

    #[test]
    fn ws_urls_get_websocket_appended_once() {
        assert_eq!(
            base("ws://h:4000").unwrap(),
            "ws://h:4000/realtime/v1/websocket"
        );
        assert_eq!(
            base("wss://h/realtime/v1").unwrap(),
            "wss://h/realtime/v1/websocket"
        );
        assert_eq!(base("ws://h/socket").unwrap(), "ws://h/socket/websocket");
        assert_eq!(
            base("WS://h/socket/websocket?x=1").unwrap(),
            "ws://h/socket/websocket"
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in ["", "h:4000", "ftp://h", "http://", "http:///path"] {
            assert!(
                matches!(base(url), Err(Error::InvalidUrl(_))),
                "{url} should be refused"
            );
        }
    }

    #[test]
    fn the_query_carries_apikey_and_vsn() {
        assert_eq!(
            endpoint("http://h", "a.b-c_d", Serializer::V2).unwrap(),
            "ws://h/realtime/v1/websocket?apikey=a.b-c_d&vsn=2.0.0"
        );
        assert_eq!(
            endpoint("http://h", "sb_x/y+z=", Serializer::V1).unwrap(),
            "ws://h/realtime/v1/websocket?apikey=sb_x%2Fy%2Bz%3D&vsn=1.0.0"
        );
    }
}
