//! Every reason a WebSocket client can be given, as types: the join refusals, the `system`
//! messages that end a channel, the reasons of refused messages, and the close reasons.
//!
//! The strings are Supabase Realtime's wherever Supabase has one (clients and apps match on
//! them), and docs/errors.md lists each; a unit test checks the two against each other, so a
//! reason cannot change, or appear, without its documentation.

use crate::auth::AuthError;

/// Why a `phx_join` was refused: the `reason` of its error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    /// The topic does not start with `realtime:` (also the reply to any message on a topic
    /// that is not joined).
    #[error("unmatched topic")]
    UnmatchedTopic,
    /// The topic is exactly `realtime:`.
    #[error("TopicNameRequired: You must provide a topic name")]
    TopicNameRequired,
    /// The name is over `max_topic_bytes` (headcount's limit, in Supabase's style).
    #[error("TopicNameTooLong: The topic name is too long")]
    TopicNameTooLong,
    /// `max_concurrent_users` reached.
    #[error("ConnectionRateLimitReached: Too many connected users")]
    TooManyUsers,
    /// The socket's or the node's joins per second.
    #[error("ClientJoinRateLimitReached: Too many joins per second")]
    JoinRate,
    /// `max_channels_per_client` reached.
    #[error("ChannelRateLimitReached: Too many channels")]
    TooManyChannels,
    /// `config.presence.key` over `max_presence_key_length`.
    #[error("PresenceKeyTooLong: The presence key is too long")]
    PresenceKeyTooLong,
    /// A private channel whose policy grants no read permission.
    #[error("Unauthorized: You do not have permissions to read from this Channel topic: {topic}")]
    Unauthorized {
        /// The channel name, without `realtime:`.
        topic: String,
    },
    /// The token was refused.
    #[error("{}", .0.join_reason())]
    Token(AuthError),
}

/// Why the server ended a joined channel: the `message` of the `system` error that precedes
/// its `phx_close`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Shutdown {
    /// The channel's token expired, or a refresh carried a bad one.
    #[error("{0}")]
    Token(AuthError),
    /// After a refresh, the policy grants no read permission any more.
    #[error("You no longer have permission to read from this Channel topic: {topic}")]
    ReadRevoked {
        /// The channel name, without `realtime:`.
        topic: String,
    },
    /// The client presence window (calls per channel per socket).
    #[error("Client presence rate limit exceeded")]
    PresenceWindow,
    /// A tracked payload, with its key, above the payload limit.
    #[error("Track message size exceeded")]
    TrackTooBig,
    /// The socket's own presence tracks per second.
    #[error("Too many presence messages per second")]
    PresenceRate,
    /// The socket's own broadcasts per second.
    #[error("Too many messages per second")]
    EventRate,
}

/// Why one message was refused while its channel stays: the `reason` of its error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The node's broadcasts per second are used up by others.
    #[error("Too many messages per second")]
    EventRate,
    /// The node's presence tracks per second are used up by others.
    #[error("Too many presence messages per second")]
    PresenceRate,
    /// Strict presence: the key is not the token's `sub`.
    #[error("StrictPresence: the presence key must equal the token's sub")]
    StrictPresence,
    /// The socket's presence budget across its channels.
    #[error("PresenceBytesExceeded: Too much presence data tracked by this socket")]
    PresenceBytes,
}

/// Why the server closed a socket: the reason of its close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// No frame for `idle_timeout`.
    Idle,
    /// No channel joined for `unjoined_timeout`.
    Unjoined,
    /// The node is stopping.
    ShuttingDown,
    /// The node's joins per second, after the join's refusal.
    JoinRate,
    /// The admin API disconnected the socket or its user.
    Disconnected,
    /// A message stayed incomplete past `incomplete_message_timeout`.
    Incomplete,
}

impl Close {
    /// Every close reason.
    pub const ALL: [Close; 6] = [
        Close::Idle,
        Close::Unjoined,
        Close::ShuttingDown,
        Close::JoinRate,
        Close::Disconnected,
        Close::Incomplete,
    ];

    /// The reason as the close frame carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Close::Idle => "idle timeout",
            Close::Unjoined => "no channel joined",
            Close::ShuttingDown => "server shutting down",
            Close::JoinRate => "Too many joins per second",
            Close::Disconnected => "disconnected by an administrator",
            Close::Incomplete => "message incomplete for too long",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = include_str!("../../../docs/errors.md");

    /// The first column of each table row under the heading that starts with `heading`, with
    /// the backticks taken off.
    fn documented(heading: &str) -> Vec<String> {
        let section = DOC
            .split("\n## ")
            .find(|s| s.starts_with(heading))
            .unwrap_or_else(|| panic!("no section {heading:?} in docs/errors.md"));
        section
            .lines()
            .filter(|l| l.starts_with("| `") || l.starts_with("| ``"))
            .map(|l| {
                let cell = l[1..].split(" | ").next().unwrap().trim();
                // A string with backticks in it is written between double backticks.
                let (open, close) = if cell.starts_with("``") {
                    ("``", "``")
                } else {
                    ("`", "`")
                };
                let inner = &cell[open.len()..];
                inner[..inner.find(close).unwrap()].trim().to_owned()
            })
            .collect()
    }

    /// A reason as the docs write it: counts as `N`, channel names as `NAME`.
    fn doc_form(reason: &str) -> String {
        reason.replace("room-7", "NAME").replace(" 12 ", " N ")
    }

    fn joins() -> Vec<JoinRefusal> {
        let t = |e| JoinRefusal::Token(e);
        vec![
            JoinRefusal::UnmatchedTopic,
            JoinRefusal::TopicNameRequired,
            JoinRefusal::TopicNameTooLong,
            JoinRefusal::TooManyUsers,
            JoinRefusal::JoinRate,
            JoinRefusal::TooManyChannels,
            JoinRefusal::PresenceKeyTooLong,
            JoinRefusal::Unauthorized {
                topic: "room-7".into(),
            },
            t(AuthError::Expired { seconds_ago: 12 }),
            t(AuthError::MissingClaims),
            t(AuthError::InvalidExp),
            t(AuthError::NotYetValid { seconds_early: 12 }),
            t(AuthError::InvalidNbf),
            t(AuthError::Malformed),
            t(AuthError::Signature),
            t(AuthError::Signer),
        ]
    }

    #[test]
    fn every_join_refusal_is_documented_and_every_documented_one_exists() {
        let docs = documented("When a channel is joined");
        let ours: Vec<String> = joins().iter().map(|r| doc_form(&r.to_string())).collect();
        for r in &ours {
            assert!(docs.contains(r), "{r:?} is not in docs/errors.md");
        }
        for d in &docs {
            assert!(
                ours.contains(d),
                "docs/errors.md lists {d:?}, which no refusal gives"
            );
        }
    }

    #[test]
    fn every_shutdown_message_is_documented_and_every_documented_one_exists() {
        let docs = documented("While a channel is joined");
        let ours: Vec<String> = [
            Shutdown::Token(AuthError::Expired { seconds_ago: 12 }),
            Shutdown::Token(AuthError::Malformed),
            Shutdown::Token(AuthError::MissingClaims),
            Shutdown::ReadRevoked {
                topic: "room-7".into(),
            },
            Shutdown::PresenceWindow,
            Shutdown::TrackTooBig,
            Shutdown::PresenceRate,
            Shutdown::EventRate,
        ]
        .iter()
        .map(|r| doc_form(&r.to_string()))
        .collect();
        for r in &ours {
            assert!(docs.contains(r), "{r:?} is not in docs/errors.md");
        }
        for d in &docs {
            assert!(
                ours.contains(d),
                "docs/errors.md lists {d:?}, which no shutdown gives"
            );
        }
    }

    #[test]
    fn every_refusal_reason_and_close_reason_is_documented() {
        for r in [
            Refused::EventRate,
            Refused::PresenceRate,
            Refused::StrictPresence,
            Refused::PresenceBytes,
        ] {
            let quoted = format!(r#""reason":"{r}""#);
            assert!(DOC.contains(&quoted), "{quoted} is not in docs/errors.md");
        }
        for c in Close::ALL {
            let row = DOC
                .lines()
                .find(|l| l.contains(&format!("| `{}` |", c.as_str())));
            assert!(
                row.is_some(),
                "close reason {:?} is not in docs/errors.md",
                c.as_str()
            );
        }
    }
}
