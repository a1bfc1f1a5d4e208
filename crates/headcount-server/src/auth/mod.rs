//! JWT verification with Supabase Realtime's rules and error strings.
//!
//! A token is checked in Supabase's order: its claims and header must decode to JSON objects
//! (else *malformed*); the header must say `"typ":"JWT"` with an HS256/384/512 `alg` (else the
//! *signer* error); the signature must verify with the secret; `exp`, when present, must lie in
//! the future; `nbf`, when present, must not (Supabase does not look at `nbf`; we refuse a token
//! that says it is not valid yet, with no leeway, as for `exp`); and `role` and `exp` must both be
//! present.
//!
//! Accepted tokens are remembered (see [`Verifier::verify`]): every client of an app connects
//! with the same anon key, and realtime-js sends its token again in each join, so the same
//! string arrives thousands of times and is checked cryptographically once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

/// Why a token was refused. Each variant knows the strings Supabase uses for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not three base64url parts holding JSON objects.
    #[error("The token provided is not a valid JWT")]
    Malformed,
    /// The signature does not match.
    #[error("Failed to validate JWT signature")]
    Signature,
    /// No key can verify this `alg` (or `typ` is not `JWT`).
    #[error("Failed to generate JWT signer, check your JWT secret or JWKS configuration")]
    Signer,
    /// `role` or `exp` is missing.
    #[error("Fields `role` and `exp` are required in JWT")]
    MissingClaims,
    /// `exp` is in the past (or now).
    #[error("Token has expired {seconds_ago} seconds ago")]
    Expired {
        /// How long ago it expired.
        seconds_ago: i64,
    },
    /// `exp` is not an integer.
    #[error("Token expiration time is invalid")]
    InvalidExp,
    /// `nbf` (not before) is in the future. Supabase has no string for it (it ignores `nbf`).
    #[error("Token is not valid yet, it becomes valid in {seconds_early} seconds")]
    NotYetValid {
        /// How long until `nbf`.
        seconds_early: i64,
    },
    /// `nbf` is not an integer.
    #[error("Token not-before time is invalid")]
    InvalidNbf,
}

impl AuthError {
    /// The `reason` of a refused `phx_join`, with Supabase's error code in front.
    pub fn join_reason(&self) -> String {
        let code = match self {
            AuthError::Malformed => "MalformedJWT",
            AuthError::Signature => "JwtSignatureError",
            AuthError::Signer => "JwtSignerError",
            AuthError::MissingClaims
            | AuthError::Expired { .. }
            | AuthError::InvalidExp
            | AuthError::NotYetValid { .. }
            | AuthError::InvalidNbf => "InvalidJWTToken",
        };
        format!("{code}: {self}")
    }

    /// The `error` of a refused WebSocket upgrade (HTTP 401).
    pub fn connect_error(&self) -> &'static str {
        match self {
            AuthError::Malformed | AuthError::InvalidExp | AuthError::InvalidNbf => {
                "The token provided is not a valid JWT"
            }
            AuthError::Signature => "Failed to validate JWT signature",
            AuthError::Signer => {
                "Failed to generate JWT signer, check your JWT secret or JWKS configuration"
            }
            AuthError::MissingClaims => "Fields `role` and `exp` are required in JWT",
            AuthError::Expired { .. } => "Token has expired",
            AuthError::NotYetValid { .. } => "Token is not valid yet",
        }
    }
}

/// The claims of an accepted token.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    /// `role`, such as `anon`, `authenticated` or `service_role`.
    pub role: String,
    /// `exp`, in seconds since the Unix epoch.
    pub exp: i64,
    /// `sub`, the user id, when present.
    pub sub: Option<String>,
    /// Every claim.
    pub all: Map<String, Value>,
}

/// The longest token accepted, in bytes; anything longer is refused as malformed.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The key family a JWK belongs to, which must agree with the token's `alg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Oct,
    Rsa,
    Ec,
    Okp,
}

#[derive(Clone)]
struct PublicKey {
    kid: String,
    kind: KeyKind,
    key: DecodingKey,
}

/// Verifies tokens: HS256/384/512 with the secret, and RS256/384/512, ES256/384 and EdDSA
/// with the keys of a JWKS file, chosen by the token's `kid` (as Supabase does; an HS token
/// whose `kid` names an `oct` key in the JWKS uses that key instead of the secret).
#[derive(Clone)]
pub struct Verifier {
    secret: DecodingKey,
    jwks: Vec<PublicKey>,
    accepted: Arc<Mutex<HashMap<Box<str>, Claims>>>,
}

/// How many accepted tokens [`Verifier`] remembers; when full it forgets them all and starts
/// again (tokens are at most [`MAX_TOKEN_BYTES`], so this bounds the memory too).
pub const ACCEPTED_CACHE_SIZE: usize = 1024;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secret", &"<redacted>")
            .field(
                "jwks_kids",
                &self.jwks.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn decode_json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Removes what Supabase removes before verifying: URL escapes and every whitespace character.
pub fn clean_token(token: &str) -> String {
    if !token
        .bytes()
        .any(|b| b == b'%' || !b.is_ascii() || (b as char).is_whitespace())
    {
        return token.to_owned();
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

impl Verifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &str) -> Verifier {
        Verifier {
            secret: DecodingKey::from_secret(secret.as_bytes()),
            jwks: Vec::new(),
            accepted: Arc::default(),
        }
    }

    /// A verifier that also knows the public (and `oct`) keys of a JWKS document
    /// (`{"keys": [...]}`). Keys without a `kid` are skipped: tokens choose keys by `kid`.
    pub fn with_jwks(secret: &str, jwks_json: &str) -> Result<Verifier, String> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(jwks_json).map_err(|e| format!("invalid JWKS: {e}"))?;
        let mut verifier = Verifier::new(secret);
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let kind = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => KeyKind::Rsa,
                AlgorithmParameters::EllipticCurve(_) => KeyKind::Ec,
                AlgorithmParameters::OctetKeyPair(_) => KeyKind::Okp,
                AlgorithmParameters::OctetKey(_) => KeyKind::Oct,
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWKS key {kid:?}: {e}"))?;
            verifier.jwks.push(PublicKey { kid, kind, key });
        }
        Ok(verifier)
    }

    /// The number of JWKS keys known.
    pub fn jwks_len(&self) -> usize {
        self.jwks.len()
    }

    fn jwk(&self, kid: Option<&str>, kind: KeyKind) -> Option<&DecodingKey> {
        let kid = kid?;
        self.jwks
            .iter()
            .find(|k| k.kind == kind && k.kid == kid)
            .map(|k| &k.key)
    }

    /// Checks `token` at `now` (seconds since the Unix epoch).
    ///
    /// A token accepted before is not verified again: its signature and claims cannot have
    /// changed, so only its expiry is checked anew (the keys of a verifier never change; a new
    /// configuration builds a new verifier). Refusals are not remembered.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let known = self
            .accepted
            .lock()
            .ok()
            .and_then(|m| m.get(token).cloned());
        if let Some(claims) = known {
            return if claims.exp > now {
                Ok(claims)
            } else {
                Err(AuthError::Expired {
                    seconds_ago: now.saturating_sub(claims.exp),
                })
            };
        }
        let claims = self.verify_uncached(token, now)?;
        if let Ok(mut accepted) = self.accepted.lock() {
            if accepted.len() >= ACCEPTED_CACHE_SIZE {
                accepted.clear();
            }
            accepted.insert(token.into(), claims.clone());
        }
        Ok(claims)
    }

    fn verify_uncached(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        let token = clean_token(token);
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let claims = decode_json_object(claims).ok_or(AuthError::Malformed)?;
        let header = decode_json_object(header).ok_or(AuthError::Malformed)?;
        if header.get("typ").and_then(Value::as_str) != Some("JWT") {
            return Err(AuthError::Signer);
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let (alg, key) = match header.get("alg").and_then(Value::as_str) {
            Some(name @ ("HS256" | "HS384" | "HS512")) => {
                let alg = name.parse().expect("a known HS algorithm");
                (alg, self.jwk(kid, KeyKind::Oct).unwrap_or(&self.secret))
            }
            Some(name @ ("RS256" | "RS384" | "RS512")) => (
                name.parse().expect("a known RS algorithm"),
                self.jwk(kid, KeyKind::Rsa).ok_or(AuthError::Signer)?,
            ),
            Some(name @ ("ES256" | "ES384")) => (
                name.parse().expect("a known ES algorithm"),
                self.jwk(kid, KeyKind::Ec).ok_or(AuthError::Signer)?,
            ),
            Some("EdDSA") => (
                Algorithm::EdDSA,
                self.jwk(kid, KeyKind::Okp).ok_or(AuthError::Signer)?,
            ),
            _ => return Err(AuthError::Signer),
        };
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        match jsonwebtoken::decode::<Value>(&token, key, &validation) {
            Ok(_) => {}
            Err(e) => {
                return Err(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::Signature,
                    jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => AuthError::Signer,
                    _ => AuthError::Malformed,
                });
            }
        }
        let exp = match claims.get("exp") {
            None => None,
            Some(v) => match v.as_i64() {
                Some(exp) if exp > now => Some(exp),
                Some(exp) => {
                    return Err(AuthError::Expired {
                        seconds_ago: now.saturating_sub(exp),
                    });
                }
                None => return Err(AuthError::InvalidExp),
            },
        };
        // Checked after `exp`, before the required claims: a token that is both expired and not
        // valid yet (nbf > exp) reports its expiry, as a client would look for first.
        match claims.get("nbf").map(Value::as_i64) {
            None => {}
            Some(Some(nbf)) if nbf <= now => {}
            Some(Some(nbf)) => {
                return Err(AuthError::NotYetValid {
                    seconds_early: nbf.saturating_sub(now),
                });
            }
            Some(None) => return Err(AuthError::InvalidNbf),
        }
        let (Some(Value::String(role)), Some(exp)) = (claims.get("role"), exp) else {
            return Err(AuthError::MissingClaims);
        };
        Ok(Claims {
            role: role.clone(),
            exp,
            sub: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
            all: claims,
        })
    }
}

/// The shortest JWT secret accepted, in bytes: Supabase's minimum, and what HS256 needs to be
/// as strong as its hash.
pub const MIN_SECRET_BYTES: usize = 32;

/// What `headcount serve --print-config` writes in place of a secret. A file written by it and
/// used as is must not make this text the secret.
pub const REDACTED: &str = "<redacted>";

/// Why a JWT secret was refused (at start, by `headcount serve` and `headcount token`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// An empty secret: most often an unset shell variable (`--jwt-secret "$SECRET"`).
    #[error(
        "the JWT secret is empty (an unset shell variable?); give one of at least 32 bytes, or none to have one generated"
    )]
    Empty,
    /// The redaction placeholder of `--print-config`.
    #[error(
        "the JWT secret is the placeholder \"<redacted>\" written by --print-config; put the real secret in its place"
    )]
    Placeholder,
    /// Fewer than [`MIN_SECRET_BYTES`] bytes.
    #[error("the JWT secret is {0} bytes long; it must be at least 32 bytes")]
    TooShort(usize),
}

/// Checks that `secret` can sign tokens nobody can guess: at least [`MIN_SECRET_BYTES`] bytes and
/// not the [`REDACTED`] placeholder.
pub fn check_secret(secret: &str) -> Result<(), SecretError> {
    if secret.is_empty() {
        Err(SecretError::Empty)
    } else if secret.contains(REDACTED) {
        Err(SecretError::Placeholder)
    } else if secret.len() < MIN_SECRET_BYTES {
        Err(SecretError::TooShort(secret.len()))
    } else {
        Ok(())
    }
}

/// Signs a token with HS256: the claims given, plus `role`, `exp` and `iat`.
pub fn sign(secret: &str, role: &str, sub: Option<&str>, iat: i64, exp: i64) -> String {
    let mut claims = Map::new();
    claims.insert("iss".into(), "headcount".into());
    claims.insert("role".into(), role.into());
    if let Some(sub) = sub {
        claims.insert("sub".into(), sub.into());
    }
    claims.insert("iat".into(), iat.into());
    claims.insert("exp".into(), exp.into());
    sign_claims(secret, &Value::Object(claims))
}

/// Signs arbitrary claims with HS256 (`typ: JWT`).
pub fn sign_claims(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

#[cfg(test)]
mod tests;
