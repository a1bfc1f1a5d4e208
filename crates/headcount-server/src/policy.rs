//! Authorization of private channels: rules an operator writes in a TOML file.
//!
//! A private channel (`config.private: true`) grants nothing by default. Each rule matches a
//! topic pattern and the token's claims, and allows some of `broadcast:read`,
//! `broadcast:write`, `presence:read` and `presence:write`; a member gets the union of the
//! rules that match. Joining needs `broadcast:read` or `presence:read`, as in Supabase.
//!
//! ```toml
//! # Signed-in users may use every room.
//! [[rule]]
//! topic = "room:*"
//! role = "authenticated"
//! allow = ["broadcast:read", "broadcast:write", "presence:read", "presence:write"]
//!
//! # Each user reads their own inbox, "inbox:<their sub>".
//! [[rule]]
//! topic = "inbox:{sub}"
//! allow = ["broadcast:read"]
//!
//! # Members of a team see its presence, if their plan claim says "pro".
//! [[rule]]
//! topic = "team:{claims.team}:*"
//! claims = { plan = "pro" }
//! allow = ["presence:read", "presence:write"]
//! ```
//!
//! Topic patterns are matched against the channel name without `realtime:`. `*` matches any
//! run of characters; `{sub}`, `{role}` and `{claims.NAME}` match exactly the value of that
//! claim (a rule with a placeholder whose claim is missing or not a string never matches).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::Claims;

/// What a member may do in a channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Receive broadcasts.
    pub broadcast_read: bool,
    /// Send broadcasts.
    pub broadcast_write: bool,
    /// Receive presence state and diffs.
    pub presence_read: bool,
    /// Track and untrack.
    pub presence_write: bool,
}

impl Grants {
    /// Everything: what public channels grant.
    pub const ALL: Grants = Grants {
        broadcast_read: true,
        broadcast_write: true,
        presence_read: true,
        presence_write: true,
    };

    /// Whether the member may join at all.
    pub fn can_read(&self) -> bool {
        self.broadcast_read || self.presence_read
    }

    fn union(self, other: Grants) -> Grants {
        Grants {
            broadcast_read: self.broadcast_read || other.broadcast_read,
            broadcast_write: self.broadcast_write || other.broadcast_write,
            presence_read: self.presence_read || other.presence_read,
            presence_write: self.presence_write || other.presence_write,
        }
    }
}

/// A policy file that could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Not valid TOML, or not the expected shape.
    #[error("invalid policy file: {0}")]
    Syntax(String),
    /// A rule that makes no sense.
    #[error("rule {rule}: {message}")]
    Rule {
        /// The rule's position, from 1.
        rule: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Claim {
    Sub,
    Role,
    Named(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(String),
    Star,
    Claim(Claim),
}

#[derive(Clone, Debug, PartialEq)]
struct Rule {
    topic: Vec<Token>,
    roles: Option<Vec<String>>,
    claims: Map<String, Value>,
    grants: Grants,
}

/// The rules of private channels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    topic: String,
    role: Option<OneOrMany>,
    #[serde(default)]
    claims: Map<String, Value>,
    allow: Vec<String>,
}

fn parse_pattern(pattern: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if !literal.is_empty() {
                    tokens.push(Token::Literal(std::mem::take(&mut literal)));
                }
                if tokens.last() != Some(&Token::Star) {
                    tokens.push(Token::Star);
                }
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let claim = match name.as_str() {
                    "sub" => Claim::Sub,
                    "role" => Claim::Role,
                    other => match other.strip_prefix("claims.") {
                        Some(n) if !n.is_empty() => Claim::Named(n.to_owned()),
                        _ => {
                            return Err(format!(
                                "unknown placeholder {{{name}}} in topic {pattern:?}"
                            ));
                        }
                    },
                };
                if !literal.is_empty() {
                    tokens.push(Token::Literal(std::mem::take(&mut literal)));
                }
                tokens.push(Token::Claim(claim));
            }
            '}' => return Err(format!("unbalanced '}}' in topic {pattern:?}")),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal));
    }
    Ok(tokens)
}

/// Wildcard matching of `text` against literals and stars (placeholders already resolved),
/// in time linear in the text. The pattern is split at its stars into segments: the first
/// must be a prefix, the last a suffix, and those between are found left to right, each at
/// its leftmost place after the one before. Taking the leftmost place is always safe, since
/// it leaves the most text for what follows, so nothing is ever tried twice: the recursive
/// matcher this replaces backtracked over every split and went quadratic (or worse) on long
/// topics. `str::find` is linear, and a needle found in UTF-8 text starts on a character
/// boundary, so `*` still matches runs of whole characters.
fn glob(tokens: &[Token], text: &str) -> bool {
    let mut segments: Vec<String> = vec![String::new()];
    for token in tokens {
        match token {
            Token::Literal(l) => segments.last_mut().expect("never empty").push_str(l),
            Token::Star => segments.push(String::new()),
            Token::Claim(_) => unreachable!("placeholders are resolved before matching"),
        }
    }
    let (first, rest) = segments.split_first().expect("never empty");
    let Some((last, middle)) = rest.split_last() else {
        return text == first;
    };
    let Some(mut text) = text.strip_prefix(first.as_str()) else {
        return false;
    };
    for segment in middle {
        match text.find(segment.as_str()) {
            Some(at) => text = &text[at + segment.len()..],
            None => return false,
        }
    }
    text.ends_with(last.as_str())
}

impl Rule {
    fn matches(&self, topic: &str, claims: &Claims) -> bool {
        if let Some(roles) = &self.roles
            && !roles.contains(&claims.role)
        {
            return false;
        }
        if self
            .claims
            .iter()
            .any(|(k, v)| claims.all.get(k) != Some(v))
        {
            return false;
        }
        let mut resolved = Vec::with_capacity(self.topic.len());
        for token in &self.topic {
            resolved.push(match token {
                Token::Claim(claim) => {
                    let value = match claim {
                        Claim::Sub => claims.sub.as_deref(),
                        Claim::Role => Some(claims.role.as_str()),
                        Claim::Named(name) => claims.all.get(name).and_then(Value::as_str),
                    };
                    match value {
                        Some(v) if !v.is_empty() => Token::Literal(v.to_owned()),
                        _ => return false,
                    }
                }
                other => other.clone(),
            });
        }
        glob(&resolved, topic)
    }
}

impl Policy {
    /// Reads a policy file's text.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let spec: FileSpec =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let mut rules = Vec::with_capacity(spec.rule.len());
        for (i, r) in spec.rule.into_iter().enumerate() {
            let err = |message: String| PolicyError::Rule {
                rule: i + 1,
                message,
            };
            let topic = parse_pattern(&r.topic).map_err(err)?;
            let mut grants = Grants::default();
            for a in &r.allow {
                match a.as_str() {
                    "broadcast:read" => grants.broadcast_read = true,
                    "broadcast:write" => grants.broadcast_write = true,
                    "presence:read" => grants.presence_read = true,
                    "presence:write" => grants.presence_write = true,
                    other => {
                        return Err(err(format!(
                            "unknown permission {other:?} (use broadcast:read, broadcast:write, presence:read, presence:write)"
                        )));
                    }
                }
            }
            let roles = r.role.map(|r| match r {
                OneOrMany::One(s) => vec![s],
                OneOrMany::Many(v) => v,
            });
            rules.push(Rule {
                topic,
                roles,
                claims: r.claims,
                grants,
            });
        }
        Ok(Policy { rules })
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (every private channel is refused).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What the bearer of `claims` may do in the private channel `sub_topic` (the channel name
    /// without `realtime:`).
    pub fn evaluate(&self, sub_topic: &str, claims: &Claims) -> Grants {
        self.rules
            .iter()
            .filter(|r| r.matches(sub_topic, claims))
            .fold(Grants::default(), |acc, r| acc.union(r.grants))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(role: &str, sub: Option<&str>, extra: Value) -> Claims {
        let mut all = extra.as_object().cloned().unwrap_or_default();
        all.insert("role".into(), role.into());
        if let Some(s) = sub {
            all.insert("sub".into(), s.into());
        }
        Claims {
            role: role.into(),
            exp: 0,
            sub: sub.map(Into::into),
            all,
        }
    }

    const EXAMPLE: &str = r#"
        [[rule]]
        topic = "room:*"
        role = "authenticated"
        allow = ["broadcast:read", "broadcast:write", "presence:read", "presence:write"]

        [[rule]]
        topic = "inbox:{sub}"
        allow = ["broadcast:read"]

        [[rule]]
        topic = "team:{claims.team}:*"
        claims = { plan = "pro" }
        allow = ["presence:read"]

        [[rule]]
        topic = "lobby"
        role = ["anon", "authenticated"]
        allow = ["presence:read"]
    "#;

    #[test]
    fn rules_match_topics_roles_and_claims() {
        let p = Policy::from_toml(EXAMPLE).unwrap();
        let user = claims(
            "authenticated",
            Some("u1"),
            json_obj(r#"{"team":"blue","plan":"pro"}"#),
        );
        assert_eq!(p.evaluate("room:1", &user), Grants::ALL);
        assert_eq!(
            p.evaluate("room:", &user),
            Grants::ALL,
            "* matches nothing too"
        );
        assert_eq!(p.evaluate("rooms:1", &user), Grants::default());
        assert_eq!(
            p.evaluate("room:1", &claims("anon", None, Value::Null)),
            Grants::default()
        );

        let inbox = Grants {
            broadcast_read: true,
            ..Grants::default()
        };
        assert_eq!(p.evaluate("inbox:u1", &user), inbox);
        assert_eq!(
            p.evaluate("inbox:u2", &user),
            Grants::default(),
            "someone else's inbox"
        );
        assert_eq!(
            p.evaluate("inbox:", &claims("anon", None, Value::Null)),
            Grants::default()
        );

        let team = Grants {
            presence_read: true,
            ..Grants::default()
        };
        assert_eq!(p.evaluate("team:blue:chat", &user), team);
        assert_eq!(p.evaluate("team:red:chat", &user), Grants::default());
        let free = claims(
            "authenticated",
            Some("u1"),
            json_obj(r#"{"team":"blue","plan":"free"}"#),
        );
        assert_eq!(p.evaluate("team:blue:chat", &free), Grants::default());

        assert!(
            p.evaluate("lobby", &claims("anon", None, Value::Null))
                .can_read()
        );
        assert!(
            !p.evaluate("lobby", &claims("service_role", None, Value::Null))
                .can_read()
        );
        assert_eq!(
            p.evaluate("lobby:x", &user),
            Grants::default(),
            "patterns are anchored"
        );
    }

    #[test]
    fn nothing_is_granted_without_rules() {
        let user = claims("service_role", Some("admin"), Value::Null);
        assert_eq!(
            Policy::default().evaluate("anything", &user),
            Grants::default()
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(matches!(
            Policy::from_toml("[[rule]]\ntopic = 3"),
            Err(PolicyError::Syntax(_))
        ));
        assert!(matches!(
            Policy::from_toml("[[rule]]\ntopic = \"a\"\nallow = [\"presence:delete\"]"),
            Err(PolicyError::Rule { rule: 1, .. })
        ));
        assert!(matches!(
            Policy::from_toml("[[rule]]\ntopic = \"a:{email}\"\nallow = []"),
            Err(PolicyError::Rule { rule: 1, .. })
        ));
        assert!(matches!(
            Policy::from_toml("[[rules]]\ntopic = \"a\""),
            Err(PolicyError::Syntax(_))
        ));
    }

    #[test]
    fn globs() {
        let t = |p: &str| parse_pattern(p).unwrap();
        assert!(glob(&t("a*b*c"), "aXXbYYc"));
        assert!(glob(&t("*"), ""));
        assert!(glob(&t("a**"), "abc"));
        assert!(!glob(&t("a*b"), "acb!"));
        assert!(glob(&t("é*"), "éà"));
    }

    /// The backtracking matcher `glob` replaced: the reference for its semantics.
    fn reference_glob(tokens: &[Token], text: &str) -> bool {
        match tokens.split_first() {
            None => text.is_empty(),
            Some((Token::Literal(l), rest)) => text
                .strip_prefix(l.as_str())
                .is_some_and(|t| reference_glob(rest, t)),
            Some((Token::Star, rest)) => text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .any(|i| reference_glob(rest, &text[i..])),
            Some((Token::Claim(_), _)) => unreachable!(),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Small alphabets so that stars, repeats and near misses are common.
        #[test]
        fn the_linear_matcher_agrees_with_the_backtracking_one(
            pattern in "[ab:*é]{0,10}",
            text in "[ab:é]{0,14}",
        ) {
            let tokens = parse_pattern(&pattern).unwrap();
            proptest::prop_assert_eq!(
                glob(&tokens, &text),
                reference_glob(&tokens, &text),
                "pattern {:?} text {:?}", pattern, text
            );
        }

        /// Texts built to match (a pattern with its stars filled in) must match, and so must
        /// the reference.
        #[test]
        fn a_pattern_matches_its_own_fillings(
            pattern in "[ab:*]{0,10}",
            fills in proptest::collection::vec("[ab:]{0,4}", 10),
        ) {
            let mut fill = fills.iter();
            let text: String = pattern
                .chars()
                .map(|c| if c == '*' { fill.next().cloned().unwrap_or_default() } else { c.to_string() })
                .collect();
            let tokens = parse_pattern(&pattern).unwrap();
            proptest::prop_assert!(glob(&tokens, &text), "pattern {:?} text {:?}", pattern, text);
            proptest::prop_assert!(reference_glob(&tokens, &text));
        }
    }

    #[test]
    fn an_adversarial_topic_is_matched_in_one_pass() {
        // `org:*:room:*:chat` against "org:" + ":room:" x N: the backtracking matcher tried
        // every pair of split points, so its work grew with the square of N (a 116 KB topic
        // took 8.8 s). This one reads the text once.
        let tokens = parse_pattern("org:*:room:*:chat").unwrap();
        let miss = format!("org:{}x", ":room:".repeat(50_000));
        assert!(!glob(&tokens, &miss));
        let hit = format!("org:{}chat", ":room:".repeat(50_000));
        assert!(glob(&tokens, &hit));
    }

    fn json_obj(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }
}
