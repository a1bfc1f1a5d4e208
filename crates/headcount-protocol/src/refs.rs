//! Message references.
//!
//! Phoenix clients number their messages with a per-socket counter and send the numbers as
//! strings (`"12"`), but other clients send plain numbers (Supabase's own load scripts send
//! `"ref": 0`). A server must treat refs as opaque and echo each one exactly as it came, so a
//! [`Ref`] keeps the JSON type and the text.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer};
use serde_json::value::RawValue;

/// An opaque message reference: `null`, a JSON string, or a JSON number.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Ref {
    /// `null`, or a reference that was absent.
    #[default]
    Null,
    /// A JSON string, unescaped.
    Str(Box<str>),
    /// A JSON number, kept as its decimal text.
    Num(Box<str>),
}

impl Ref {
    /// A string reference.
    pub fn str(s: impl Into<Box<str>>) -> Ref {
        Ref::Str(s.into())
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Ref::Null)
    }

    /// Appends the JSON form of this reference to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Ref::Null => out.extend_from_slice(b"null"),
            Ref::Str(s) => crate::encode::write_json_str(out, s),
            Ref::Num(n) => out.extend_from_slice(n.as_bytes()),
        }
    }

    /// The JSON form of this reference.
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        self.write_json(&mut out);
        String::from_utf8(out).expect("JSON text is UTF-8")
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Null => f.write_str("null"),
            Ref::Str(s) | Ref::Num(s) => f.write_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for Ref {
    /// Keeps a number's text exactly as it came (`1.50` stays `1.50`), by reading the raw JSON.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ref, D::Error> {
        let raw: Box<RawValue> = Deserialize::deserialize(deserializer)?;
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"') => serde_json::from_str::<String>(text)
                .map(|s| Ref::Str(s.into()))
                .map_err(de::Error::custom),
            Some(b'n') => Ok(Ref::Null),
            Some(b'-' | b'0'..=b'9') => Ok(Ref::Num(text.into())),
            _ => Err(de::Error::custom(
                "a ref must be a string, a number or null",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_keep_their_json_type() {
        let refs: Vec<Ref> = serde_json::from_str(r#"["12", 0, null, -3, "a\"b"]"#).unwrap();
        assert_eq!(
            refs,
            vec![
                Ref::str("12"),
                Ref::Num("0".into()),
                Ref::Null,
                Ref::Num("-3".into()),
                Ref::str("a\"b")
            ]
        );
        let echoed: Vec<String> = refs.iter().map(Ref::to_json).collect();
        assert_eq!(echoed, [r#""12""#, "0", "null", "-3", r#""a\"b""#]);
    }

    #[test]
    fn numbers_keep_their_text() {
        let refs: Vec<Ref> =
            serde_json::from_str("[1.50, 1e2, 100000000000000000000000000000000000000000001]")
                .unwrap();
        let echoed: Vec<String> = refs.iter().map(Ref::to_json).collect();
        assert_eq!(
            echoed,
            [
                "1.50",
                "1e2",
                "100000000000000000000000000000000000000000001"
            ]
        );
    }

    #[test]
    fn string_and_number_refs_differ() {
        let s: Ref = serde_json::from_str(r#""3""#).unwrap();
        let n: Ref = serde_json::from_str("3").unwrap();
        assert_ne!(s, n);
    }

    #[test]
    fn objects_are_not_refs() {
        assert!(serde_json::from_str::<Ref>("{}").is_err());
        assert!(serde_json::from_str::<Ref>("[]").is_err());
        assert!(serde_json::from_str::<Ref>("true").is_err());
    }
}
