//! `headcount token`: prints an HS256 JWT signed with the server's secret.
//!
//! The token carries `iss`, `role`, `sub` (when given), `iat` and `exp`, then every `--claim`,
//! which wins over all of them (so `--claim exp=...` sets an exact expiry, even a past one).

use anyhow::bail;
use clap::Args;
use headcount_server::auth;
use serde_json::{Map, Value};

/// Arguments of `headcount token`.
#[derive(Args, Debug)]
pub(crate) struct TokenArgs {
    /// The secret to sign with (at least 32 bytes, as for `headcount serve`).
    #[arg(
        long,
        env = "HEADCOUNT_JWT_SECRET",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    jwt_secret: String,
    /// The `role` claim (`anon`, `authenticated`, `service_role`, ...).
    #[arg(long)]
    role: String,
    /// The `sub` claim (the user id).
    #[arg(long)]
    sub: Option<String>,
    /// How long until the token expires: seconds, or a number followed by s, m, h or d
    /// (`90s`, `15m`, `1h`, `7d`). Zero and negative durations are refused.
    #[arg(
        long,
        default_value = "1h",
        value_name = "DURATION",
        value_parser = parse_duration,
        allow_hyphen_values = true
    )]
    exp_in: i64,
    /// An extra claim, `KEY=VALUE`, as often as needed. A value that parses as JSON is used as
    /// JSON (`--claim aal=aal2 --claim 'app_metadata={"plan":"pro"}' --claim n=3`; quote it
    /// as a JSON string, `--claim 'n="3"'`, to keep a number a string). It wins over the other
    /// flags.
    #[arg(long = "claim", value_name = "KEY=VALUE", value_parser = parse_claim)]
    claims: Vec<(String, Value)>,
}

/// Runs `headcount token`: prints the token on stdout.
pub(crate) fn run(args: TokenArgs, now: i64) -> anyhow::Result<()> {
    if let Err(e) = auth::check_secret(&args.jwt_secret) {
        bail!("{e}");
    }
    let mut claims = Map::new();
    claims.insert("iss".into(), "headcount".into());
    claims.insert("role".into(), args.role.into());
    if let Some(sub) = args.sub {
        claims.insert("sub".into(), sub.into());
    }
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(args.exp_in).into());
    claims.extend(args.claims);
    println!(
        "{}",
        auth::sign_claims(&args.jwt_secret, &Value::Object(claims))
    );
    Ok(())
}

/// `90`, `90s`, `15m`, `1h` or `7d`, in seconds; zero and negative durations are errors (a token
/// that is born expired is never what was meant; `--claim exp=...` makes one on purpose).
fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '-' && c != '+') {
        Some(i) => (&text[..i], &text[i..]),
        None => (text, "s"),
    };
    let scale: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: the unit must be s, m, h or d (90s, 15m, 1h, 7d)"
            ));
        }
    };
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (90s, 15m, 1h, 7d)"))?;
    if n <= 0 {
        return Err(format!("{text:?}: the duration must be positive"));
    }
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// `key=value`, the value as JSON when it parses as JSON, else as a string.
fn parse_claim(text: &str) -> Result<(String, Value), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("{text:?}: a claim is KEY=VALUE"));
    };
    if key.is_empty() {
        return Err(format!("{text:?}: the claim has no name"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_must_be_positive() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400));
        for bad in [
            "0",
            "0s",
            "-1",
            "-5m",
            "",
            "h",
            "1w",
            "1.5h",
            "99999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn claims_are_json_when_they_parse() {
        assert_eq!(parse_claim("aal=aal2"), Ok(("aal".into(), "aal2".into())));
        assert_eq!(parse_claim("n=3"), Ok(("n".into(), 3.into())));
        assert_eq!(parse_claim(r#"n="3""#), Ok(("n".into(), "3".into())));
        assert_eq!(
            parse_claim(r#"m={"a":[1]}"#),
            Ok(("m".into(), serde_json::json!({"a": [1]})))
        );
        assert_eq!(parse_claim("e="), Ok(("e".into(), "".into())));
        assert!(parse_claim("novalue").is_err());
        assert!(parse_claim("=x").is_err());
    }
}
