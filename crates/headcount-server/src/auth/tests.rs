//! Unit tests of token verification.

use super::*;

const NOW: i64 = 1_800_000_000;

fn v() -> Verifier {
    Verifier::new("secret")
}

#[test]
fn good_tokens_pass_in_every_hs_size() {
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let t = jsonwebtoken::encode(
            &Header::new(alg),
            &serde_json::json!({"role":"anon","exp":NOW + 10,"sub":"u1"}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        let c = v().verify(&t, NOW).unwrap();
        assert_eq!(
            (c.role.as_str(), c.exp, c.sub.as_deref()),
            ("anon", NOW + 10, Some("u1"))
        );
    }
}

#[test]
fn refusals_carry_supabase_strings() {
    let expired = sign("secret", "anon", None, NOW - 100, NOW - 3);
    assert_eq!(
        v().verify(&expired, NOW),
        Err(AuthError::Expired { seconds_ago: 3 })
    );
    assert_eq!(
        AuthError::Expired { seconds_ago: 3 }.join_reason(),
        "InvalidJWTToken: Token has expired 3 seconds ago"
    );
    let at_now = sign("secret", "anon", None, NOW - 100, NOW);
    assert_eq!(
        v().verify(&at_now, NOW),
        Err(AuthError::Expired { seconds_ago: 0 })
    );

    let other_secret = sign("other", "anon", None, NOW, NOW + 100);
    assert_eq!(v().verify(&other_secret, NOW), Err(AuthError::Signature));
    assert_eq!(
        AuthError::Signature.join_reason(),
        "JwtSignatureError: Failed to validate JWT signature"
    );

    let no_role = sign_claims("secret", &serde_json::json!({"exp": NOW + 100}));
    assert_eq!(v().verify(&no_role, NOW), Err(AuthError::MissingClaims));
    let no_exp = sign_claims("secret", &serde_json::json!({"role": "anon"}));
    assert_eq!(v().verify(&no_exp, NOW), Err(AuthError::MissingClaims));
    assert_eq!(
        AuthError::MissingClaims.join_reason(),
        "InvalidJWTToken: Fields `role` and `exp` are required in JWT"
    );

    for junk in [
        "", "abc", "a.b", "a.b.c.d", "W10.e30.", "e30.W10.", "!!.??.x",
    ] {
        assert_eq!(v().verify(junk, NOW), Err(AuthError::Malformed), "{junk:?}");
    }
    // Objects that decode, but a header without `typ: JWT`, fail at the signer, as in Supabase.
    assert_eq!(v().verify("e30.e30.", NOW), Err(AuthError::Signer));
    assert_eq!(
        AuthError::Malformed.join_reason(),
        "MalformedJWT: The token provided is not a valid JWT"
    );
}

#[test]
fn alg_none_and_foreign_algs_get_the_signer_error() {
    let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"role":"anon","exp":{}}}"#, NOW + 100));
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"RS256","typ":"JWT"}"#,
        r#"{"alg":"HS256"}"#,
    ] {
        let t = format!("{}.{claims}.", URL_SAFE_NO_PAD.encode(header));
        assert_eq!(v().verify(&t, NOW), Err(AuthError::Signer), "{header}");
    }
}

#[test]
fn whitespace_and_url_escapes_are_ignored() {
    let t = sign("secret", "anon", None, NOW, NOW + 100);
    let spaced = format!(" {}\n{} ", &t[..10], &t[10..]);
    assert!(v().verify(&spaced, NOW).is_ok());
    assert_eq!(clean_token("a%2Eb"), "a.b");
    assert_eq!(clean_token("%"), "%");
    assert_eq!(clean_token("ab%4"), "ab%4");
    // Found by fuzzing: a vertical tab is whitespace to Rust but not to `is_ascii_whitespace`.
    assert_eq!(clean_token("a\u{b}b"), "ab");
    assert_eq!(clean_token("a\u{85}b"), "ab");
}

/// Found by fuzzing: `now - exp` overflowed for an `exp` of `i64::MIN`.
#[test]
fn regression_an_exp_of_i64_min_does_not_overflow() {
    let t = sign_claims(
        "secret",
        &serde_json::json!({"role": "anon", "exp": i64::MIN}),
    );
    assert_eq!(
        v().verify(&t, NOW),
        Err(AuthError::Expired {
            seconds_ago: i64::MAX
        })
    );
}

#[test]
fn nbf_in_the_future_is_refused_and_now_or_past_accepted() {
    let with_nbf = |nbf: Value| {
        sign_claims(
            "secret",
            &serde_json::json!({"role": "anon", "exp": NOW + 100, "nbf": nbf}),
        )
    };
    assert_eq!(
        v().verify(&with_nbf(Value::from(NOW + 5)), NOW),
        Err(AuthError::NotYetValid { seconds_early: 5 })
    );
    assert_eq!(
        AuthError::NotYetValid { seconds_early: 5 }.join_reason(),
        "InvalidJWTToken: Token is not valid yet, it becomes valid in 5 seconds"
    );
    assert!(v().verify(&with_nbf(Value::from(NOW)), NOW).is_ok());
    assert!(v().verify(&with_nbf(Value::from(NOW - 5)), NOW).is_ok());
    assert_eq!(
        v().verify(&with_nbf(Value::from("soon")), NOW),
        Err(AuthError::InvalidNbf)
    );
    assert_eq!(
        v().verify(&with_nbf(Value::from(i64::MAX)), NOW - 1),
        Err(AuthError::NotYetValid {
            seconds_early: i64::MAX - NOW + 1
        })
    );
}

#[test]
fn secrets_need_32_bytes_and_are_not_the_placeholder() {
    assert_eq!(check_secret(""), Err(SecretError::Empty));
    assert_eq!(check_secret("x"), Err(SecretError::TooShort(1)));
    assert_eq!(
        check_secret(&"x".repeat(31)),
        Err(SecretError::TooShort(31))
    );
    assert_eq!(check_secret(&"x".repeat(32)), Ok(()));
    assert_eq!(check_secret(REDACTED), Err(SecretError::Placeholder));
    let padded = format!("{REDACTED}{}", "x".repeat(32));
    assert_eq!(check_secret(&padded), Err(SecretError::Placeholder));
}

#[test]
fn non_integer_exp_is_refused() {
    for exp in [serde_json::json!("soon"), serde_json::json!(1.5e10)] {
        let t = sign_claims("secret", &serde_json::json!({"role":"anon","exp":exp}));
        assert_eq!(v().verify(&t, NOW), Err(AuthError::InvalidExp));
    }
}

#[test]
fn a_remembered_token_still_expires_and_others_are_still_checked() {
    let v = v();
    let t = sign("secret", "anon", Some("u1"), NOW, NOW + 10);
    assert_eq!(v.verify(&t, NOW).unwrap().sub.as_deref(), Some("u1"));
    assert_eq!(v.verify(&t, NOW + 9).unwrap().role, "anon");
    assert_eq!(
        v.verify(&t, NOW + 13),
        Err(AuthError::Expired { seconds_ago: 3 })
    );
    // The same claims under another key, and a tampered copy, are refused.
    let foreign = sign("other", "anon", Some("u1"), NOW, NOW + 10);
    assert_eq!(v.verify(&foreign, NOW), Err(AuthError::Signature));
    let mut tampered = t.clone();
    tampered.pop();
    tampered.push(if t.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(v.verify(&tampered, NOW), Err(AuthError::Signature));
    // A refusal is not remembered as an acceptance, nor the other way round.
    assert_eq!(v.verify(&foreign, NOW), Err(AuthError::Signature));
    assert!(v.verify(&t, NOW).is_ok());
}

#[test]
fn the_memory_of_accepted_tokens_is_bounded() {
    let v = v();
    let first = sign("secret", "anon", Some("u0"), NOW, NOW + 10);
    assert!(v.verify(&first, NOW).is_ok());
    for i in 1..=ACCEPTED_CACHE_SIZE + 10 {
        let t = sign("secret", "anon", Some(&format!("u{i}")), NOW, NOW + 10);
        assert_eq!(v.verify(&t, NOW).unwrap().sub, Some(format!("u{i}")));
    }
    assert!(v.accepted.lock().unwrap().len() <= ACCEPTED_CACHE_SIZE);
    assert_eq!(v.verify(&first, NOW).unwrap().sub.as_deref(), Some("u0"));
}
