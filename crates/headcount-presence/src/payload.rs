//! What a member tracks: a JSON object, kept in canonical form.

use std::sync::Arc;

use serde_json::Value;

/// A tracked payload: a JSON object in canonical text form (compact, keys sorted, without the
/// reserved `phx_ref` and `phx_ref_prev` keys).
///
/// Canonical text makes "is this re-track identical?" a string comparison that ignores key
/// order, as Supabase's map comparison does, and lets the meta's JSON be spliced together
/// without building a tree. Sorted keys are also what Supabase sends.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Payload(Arc<str>);

/// The tracked value was not a JSON object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Presence track payload must be a map")]
pub struct NotAnObject;

impl Payload {
    /// The empty object `{}`.
    pub fn empty() -> Payload {
        Payload(Arc::from("{}"))
    }

    /// Canonicalizes a JSON value, which must be an object.
    pub fn from_value(value: Value) -> Result<Payload, NotAnObject> {
        let Value::Object(mut map) = value else {
            return Err(NotAnObject);
        };
        map.remove("phx_ref");
        map.remove("phx_ref_prev");
        let text = serde_json::to_string(&Value::Object(map)).expect("a Value always serializes");
        Ok(Payload(Arc::from(text)))
    }

    /// Parses and canonicalizes JSON text, which must hold an object.
    pub fn from_json(text: &str) -> Result<Payload, NotAnObject> {
        let value: Value = serde_json::from_str(text).map_err(|_| NotAnObject)?;
        Payload::from_value(value)
    }

    /// The canonical JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The object's members without the surrounding braces (empty for `{}`).
    pub(crate) fn members(&self) -> &str {
        &self.0[1..self.0.len() - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_keys_and_drops_reserved_ones() {
        let a =
            Payload::from_json(r#"{ "b": 1, "a": {"y": 2, "x": 1}, "phx_ref": "zzz" }"#).unwrap();
        let b = Payload::from_json(r#"{"a":{"x":1,"y":2},"b":1}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), r#"{"a":{"x":1,"y":2},"b":1}"#);
        assert_eq!(a.members(), r#""a":{"x":1,"y":2},"b":1"#);
        assert_eq!(Payload::empty().members(), "");
    }

    #[test]
    fn numbers_come_back_as_the_client_wrote_them() {
        // A client's JSON.parse must read the same double it sent, so the parse has to round
        // correctly (serde_json's fast path alone reads 1.1e29 one unit off). Rust's own
        // `f64::from_str` is correctly rounded: it is the reference here.
        let number = |json: &str| -> f64 {
            let text = json
                .strip_prefix(r#"{"x":"#)
                .unwrap()
                .strip_suffix('}')
                .unwrap();
            text.parse().unwrap()
        };
        for sent in [
            r#"{"x":1.1e29}"#,
            r#"{"x":0.1}"#,
            r#"{"x":2.2250738585072014e-308}"#,
            r#"{"x":123456789012345678901}"#,
            r#"{"x":9007199254740993}"#,
        ] {
            let canonical = Payload::from_json(sent).unwrap();
            assert_eq!(
                number(canonical.as_str()),
                number(sent),
                "{sent} -> {canonical:?}"
            );
        }
    }

    #[test]
    fn non_objects_are_refused() {
        for bad in ["[]", "1", "null", "\"s\"", "{", ""] {
            assert_eq!(Payload::from_json(bad), Err(NotAnObject), "{bad}");
        }
    }
}
