//! Token verification on raw strings and on tokens built from parts.
//!
//! Input: the first byte picks the mode.
//! * even: the rest, as (lossy) UTF-8, is a token checked at a fixed time;
//! * odd: the rest drives `arbitrary` to build a token from a header, claims and a signature
//!   (right, wrong, or missing), and the result must be exactly what Supabase's rules give.
//!
//! `clean_token` is checked on the raw strings too.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use headcount_server::auth::{AuthError, MAX_TOKEN_BYTES, Verifier, clean_token};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use sha2::{Sha256, Sha384, Sha512};

const SECRET: &str = "secret";
/// The time raw tokens are checked at; the seed tokens expire later.
const NOW: i64 = 1_800_000_000;

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Alg {
    HS256,
    HS384,
    HS512,
    None,
    RS256,
    Lower,
    Missing,
}

impl Alg {
    fn json(self) -> Option<Value> {
        Some(Value::from(match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::None => "none",
            Alg::RS256 => "RS256",
            Alg::Lower => "hs256",
            Alg::Missing => return None,
        }))
    }

    fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}

#[derive(Arbitrary, Debug)]
enum Typ {
    Jwt,
    Missing,
    Other(String),
    NotAString(i8),
}

impl Typ {
    fn is_jwt(&self) -> bool {
        match self {
            Typ::Jwt => true,
            Typ::Other(s) => s == "JWT",
            Typ::Missing | Typ::NotAString(_) => false,
        }
    }
}

/// A JSON value for a claim, with the edge cases of an `exp` close at hand.
#[derive(Arbitrary, Debug)]
enum Claim {
    Int(i64),
    /// An offset from `now`, so expiry is often near the boundary.
    NearNow(i16),
    Edge(u8),
    Big(u64),
    Float(f64),
    Str(String),
    Bool(bool),
    Null,
    Array(Vec<i8>),
}

impl Claim {
    fn json(&self, now: i64) -> Value {
        const EDGES: [i64; 6] = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX];
        match self {
            Claim::Int(n) => Value::from(*n),
            Claim::NearNow(d) => Value::from(now.saturating_add(i64::from(*d))),
            Claim::Edge(i) => Value::from(EDGES[usize::from(*i) % EDGES.len()]),
            Claim::Big(n) => Value::from(*n),
            Claim::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Claim::Str(s) => Value::from(s.as_str()),
            Claim::Bool(b) => Value::from(*b),
            Claim::Null => Value::Null,
            Claim::Array(a) => Value::from(a.clone()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Part {
    /// The JSON text of a value built below.
    Built,
    /// Arbitrary bytes, base64url-encoded (usually not JSON).
    Bytes(Vec<u8>),
    /// Arbitrary text used as the part itself (usually not base64url).
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Signature {
    Right,
    /// The right signature with one byte changed.
    Flipped(u8, u8),
    OtherSecret,
    Empty,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Token {
    alg: Alg,
    typ: Typ,
    kid: Option<String>,
    header_part: Part,
    role: Option<Claim>,
    exp: Option<Claim>,
    sub: Option<String>,
    extra: Vec<(String, i32)>,
    claims_as_array: bool,
    claims_part: Part,
    signature: Signature,
    /// The clock, in milliseconds, as the server reads it.
    now_ms: u64,
    /// Whitespace or a URL escape inserted at this position, which must change nothing.
    noise: Option<(u16, u8)>,
    extra_part: bool,
}

fn hmac(alg: Alg, secret: &[u8], input: &[u8]) -> Vec<u8> {
    macro_rules! mac {
        ($d:ty) => {{
            let mut m = Hmac::<$d>::new_from_slice(secret).expect("any key length");
            m.update(input);
            m.finalize().into_bytes().to_vec()
        }};
    }
    match alg {
        Alg::HS384 => mac!(Sha384),
        Alg::HS512 => mac!(Sha512),
        _ => mac!(Sha256),
    }
}

fn encode_part(part: &Part, built: &Value) -> String {
    match part {
        Part::Built => URL_SAFE_NO_PAD.encode(built.to_string()),
        Part::Bytes(b) => URL_SAFE_NO_PAD.encode(b),
        Part::Raw(s) => s.clone(),
    }
}

/// The JSON object a part decodes to, as the server reads it.
fn decoded_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn check_built(t: &Token) {
    let now = (t.now_ms / 1000) as i64;
    let mut header = Map::new();
    if let Some(alg) = t.alg.json() {
        header.insert("alg".into(), alg);
    }
    match &t.typ {
        Typ::Jwt => {
            header.insert("typ".into(), "JWT".into());
        }
        Typ::Missing => {}
        Typ::Other(s) => {
            header.insert("typ".into(), s.as_str().into());
        }
        Typ::NotAString(n) => {
            header.insert("typ".into(), (*n).into());
        }
    }
    if let Some(kid) = &t.kid {
        header.insert("kid".into(), kid.as_str().into());
    }
    let mut claims = Map::new();
    for (k, v) in &t.extra {
        claims.insert(k.clone(), (*v).into());
    }
    if let Some(role) = &t.role {
        claims.insert("role".into(), role.json(now));
    }
    if let Some(exp) = &t.exp {
        claims.insert("exp".into(), exp.json(now));
    }
    if let Some(sub) = &t.sub {
        claims.insert("sub".into(), sub.as_str().into());
    }
    let claims_value = if t.claims_as_array {
        Value::Array(claims.values().cloned().collect())
    } else {
        Value::Object(claims)
    };

    let header_b64 = encode_part(&t.header_part, &Value::Object(header));
    let claims_b64 = encode_part(&t.claims_part, &claims_value);
    let signing_input = format!("{header_b64}.{claims_b64}");
    let right = hmac(t.alg, SECRET.as_bytes(), signing_input.as_bytes());
    let sig = match &t.signature {
        Signature::Right => URL_SAFE_NO_PAD.encode(&right),
        Signature::Flipped(at, x) => {
            let mut s = right.clone();
            let at = usize::from(*at) % s.len();
            s[at] ^= x | 1;
            URL_SAFE_NO_PAD.encode(&s)
        }
        Signature::OtherSecret => {
            URL_SAFE_NO_PAD.encode(hmac(t.alg, b"not the secret", signing_input.as_bytes()))
        }
        Signature::Empty => String::new(),
        Signature::Raw(s) => s.clone(),
    };
    let mut token = format!("{signing_input}.{sig}");
    if t.extra_part {
        token.push_str(".x");
    }

    let got = Verifier::new(SECRET).verify(&token, now);
    if let Ok(c) = &got {
        assert!(c.exp > now, "accepted a token that expired");
        assert_eq!(
            c.all.get("role").and_then(Value::as_str),
            Some(c.role.as_str())
        );
    }

    // Inserting whitespace or percent-escaping a character changes nothing.
    if let Some((at, what)) = t.noise.filter(|_| !token.contains('%')) {
        let mut at = usize::from(at) % (token.len() + 1);
        while !token.is_char_boundary(at) {
            at -= 1;
        }
        let mut noisy = token.clone();
        match what % 4 {
            0 => noisy.insert(at, ' '),
            1 => noisy.insert_str(at, "\r\n\t"),
            2 => noisy.insert(at, '\u{3000}'),
            _ => match token[at..].chars().next() {
                Some(c) if c.is_ascii() => {
                    noisy.replace_range(at..at + 1, &format!("%{:02X}", c as u8))
                }
                _ => noisy.insert(at, '\n'),
            },
        }
        if (noisy.len() > MAX_TOKEN_BYTES) == (token.len() > MAX_TOKEN_BYTES) {
            assert_eq!(
                Verifier::new(SECRET).verify(&noisy, now),
                got,
                "noise changed the outcome: {noisy:?}"
            );
        }
    }

    // Not three parts once cleaned, or too long: malformed, whatever the parts hold.
    if clean_token(&token).split('.').count() != 3 || token.len() > MAX_TOKEN_BYTES {
        assert_eq!(got, Err(AuthError::Malformed), "{token:?}");
        return;
    }
    // The exact outcome, from Supabase's rules, for tokens whose parts are well formed.
    if !matches!(t.claims_part, Part::Built) || !matches!(t.header_part, Part::Built) {
        return;
    }
    let claims = decoded_object(&claims_b64);
    let expected = if t.claims_as_array {
        Err(AuthError::Malformed)
    } else if !t.alg.is_hmac() || !t.typ.is_jwt() {
        Err(AuthError::Signer)
    } else if let Signature::Raw(_) = t.signature {
        // Any text: a wrong signature, or not base64url at all (or, by chance, the right one).
        if !matches!(got, Err(AuthError::Signature | AuthError::Malformed)) {
            assert_eq!(sig, URL_SAFE_NO_PAD.encode(&right), "{got:?} for {token:?}");
        }
        return;
    } else if !matches!(t.signature, Signature::Right) {
        Err(AuthError::Signature)
    } else if matches!(&t.exp, Some(Claim::Array(a)) if !a.is_empty()) {
        // jsonwebtoken reads `exp` as a number and, when it is a non-empty array (or an object),
        // loses its place in the claims: the token is malformed, not one with an invalid `exp`.
        Err(AuthError::Malformed)
    } else {
        let claims = claims.expect("built claims decode");
        let exp = match claims.get("exp") {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                None => Err(AuthError::InvalidExp),
                Some(exp) if exp > now => Ok(Some(exp)),
                Some(exp) => Err(AuthError::Expired {
                    seconds_ago: now.saturating_sub(exp),
                }),
            },
        };
        // `nbf` (an extra claim may be named so) is checked after `exp`, before the required
        // claims, with no leeway.
        let nbf = match claims.get("nbf").map(Value::as_i64) {
            None => Ok(()),
            Some(None) => Err(AuthError::InvalidNbf),
            Some(Some(nbf)) if nbf <= now => Ok(()),
            Some(Some(nbf)) => Err(AuthError::NotYetValid {
                seconds_early: nbf.saturating_sub(now),
            }),
        };
        match (exp, nbf, claims.get("role")) {
            (Err(e), _, _) | (_, Err(e), _) => Err(e),
            (Ok(Some(exp)), Ok(()), Some(Value::String(role))) => Ok((role.clone(), exp)),
            (Ok(_), Ok(()), _) => Err(AuthError::MissingClaims),
        }
    };
    let got = got.map(|c| (c.role, c.exp));
    assert_eq!(got, expected, "token {token:?} at {now}");
}

fn check_raw(token: &str) {
    let cleaned = clean_token(token);
    assert!(!cleaned.chars().any(char::is_whitespace));
    if !token.contains('%') {
        let kept: String = token.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(
            cleaned, kept,
            "clean_token without escapes only drops whitespace"
        );
    }
    let verifier = Verifier::new(SECRET);
    let got = verifier.verify(token, NOW);
    if let Ok(c) = &got {
        assert!(c.exp > NOW);
        assert_eq!(c.all.get("role"), Some(&json!(c.role)));
        assert_eq!(c.all.get("exp").and_then(Value::as_i64), Some(c.exp));
    }
    if let Err(e) = &got {
        // Every refusal has its join reason and connect error.
        assert!(!e.join_reason().is_empty() && !e.connect_error().is_empty());
    }
    // Much later, a token is refused the same way, or for expiry (which is checked before the
    // claims `role` and `exp` are required); one that was not valid yet may have become so.
    let later = (u64::MAX / 1000) as i64;
    match (&got, &verifier.verify(token, later)) {
        (Err(a), Err(b)) if a == b => {}
        (Err(AuthError::NotYetValid { .. }), _) => {}
        (
            Ok(_) | Err(AuthError::Expired { .. } | AuthError::MissingClaims),
            Err(AuthError::Expired { .. }),
        ) => {}
        (Ok(_), Ok(_)) => {}
        (a, b) => panic!("at {NOW}: {a:?}, at {later}: {b:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check_raw(&String::from_utf8_lossy(rest));
    } else if let Ok(t) = Token::arbitrary_take_rest(Unstructured::new(rest)) {
        check_built(&t);
    }
});
