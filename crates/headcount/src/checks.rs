//! Start-up checks of `headcount serve`'s settings: mistakes that would otherwise start a server
//! that fails quietly later (a guessable secret, an allowed origin that can never match, cluster
//! nodes that each sign with their own generated secret) stop it at once with the reason.

use anyhow::bail;
use headcount_server::auth;

use crate::settings::Settings;

/// Checks the secret and normalises the allowed origins, in place. Run before `--print-config`,
/// so what it prints is what would run.
pub(crate) fn settings(settings: &mut Settings) -> anyhow::Result<()> {
    if let Some(secret) = &settings.jwt_secret
        && let Err(e) = auth::check_secret(secret)
    {
        bail!("{e} (--jwt-secret, HEADCOUNT_JWT_SECRET or jwt_secret)");
    }
    if let Some(origins) = &settings.allowed_origins {
        let mut normalised = Vec::with_capacity(origins.len());
        for entry in origins {
            match origin(entry) {
                Ok(Some(o)) => normalised.push(o),
                Ok(None) => {}
                Err(why) => bail!("--allowed-origins: {entry:?} {why}"),
            }
        }
        settings.allowed_origins = Some(normalised);
    }
    Ok(())
}

/// Cluster mode needs one secret on every node: a generated one differs per node, so a token
/// from one node would be refused by the others.
pub(crate) fn cluster(settings: &Settings) -> anyhow::Result<()> {
    if settings.redis_url.is_some() && settings.jwt_secret.is_none() {
        bail!(
            "cluster mode (--redis) needs the same JWT secret on every node: pass --jwt-secret (or HEADCOUNT_JWT_SECRET); a generated secret would differ on each node"
        );
    }
    Ok(())
}

/// One `--allowed-origins` entry as browsers send it in `Origin` (lower case, no trailing slash,
/// no default port), `None` for an empty entry, or why it could never match.
pub(crate) fn origin(entry: &str) -> Result<Option<String>, String> {
    let entry = entry.trim();
    if entry.is_empty() {
        return Ok(None);
    }
    if entry == "null" {
        // What browsers send from sandboxed frames and `file:` pages.
        return Ok(Some(entry.to_owned()));
    }
    if entry == "*" {
        return Err("is not an origin: leave --allowed-origins empty to allow any".into());
    }
    let Some((scheme, rest)) = entry.split_once("://") else {
        return Err(
            "has no scheme: an origin is scheme://host[:port], e.g. https://app.example.com".into(),
        );
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err("has no valid scheme: an origin is scheme://host[:port]".into());
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = authority.to_ascii_lowercase();
    let fixed = format!("{scheme}://{authority}");
    if !(tail.is_empty() || tail == "/") {
        return Err(format!(
            "has a path, query or fragment, which an Origin header never has, so it would never match: use {fixed:?}"
        ));
    }
    if authority.contains('@') {
        return Err("has a user name, which an Origin header never has".into());
    }
    let default_port = match scheme.as_str() {
        "http" | "ws" => Some(":80"),
        "https" | "wss" => Some(":443"),
        _ => None,
    };
    let authority = match default_port {
        Some(port) => authority.strip_suffix(port).unwrap_or(&authority),
        None => &authority,
    };
    if authority.is_empty() || authority.starts_with(':') {
        return Err("has no host".into());
    }
    Ok(Some(format!("{scheme}://{authority}")))
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        for (given, sent) in [
            ("https://app.example.com", "https://app.example.com"),
            ("https://app.example.com/", "https://app.example.com"),
            ("HTTPS://App.Example.com/", "https://app.example.com"),
            ("https://app.example.com:443", "https://app.example.com"),
            ("http://localhost:80/", "http://localhost"),
            ("http://localhost:5173", "http://localhost:5173"),
            (" http://[::1]:3000 ", "http://[::1]:3000"),
            ("null", "null"),
        ] {
            assert_eq!(origin(given), Ok(Some(sent.to_owned())), "{given}");
        }
        assert_eq!(origin(""), Ok(None));
    }

    #[test]
    fn origins_that_never_match_are_refused_with_the_fix() {
        let e = origin("https://app.example.com/app").unwrap_err();
        assert!(e.contains(r#"use "https://app.example.com""#), "{e}");
        for bad in [
            "app.example.com",
            "*",
            "https://app.example.com?x=1",
            "https://me@app.example.com",
            "https://",
            "https://:443",
            "://x",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }
}
