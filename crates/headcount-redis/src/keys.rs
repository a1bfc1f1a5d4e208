//! Where everything lives in Redis.
//!
//! With the default prefix `hc`, a public channel `realtime:room1` and a node `4f1c…`:
//!
//! ```text
//! hc:{pub:realtime:room1}:presence   hash    owner id "<node>:<member>" → entry JSON
//! hc:{pub:realtime:room1}:seq        string  the channel's sequence number
//! hc:{pub:realtime:room1}:events     pub/sub the channel's changes and broadcasts
//! hc:nodes                           set     every node that may own entries
//! hc:node:{4f1c…}:alive              string  the node's heartbeat (expires)
//! hc:node:{4f1c…}:epoch              string  bumped each time the node comes back from the dead
//! hc:node:{4f1c…}:channels           set     channel ids where the node owns entries
//! hc:node:{4f1c…}:reap               string  the lock of whoever removes a dead node's entries
//! ```
//!
//! The part in braces is a Redis Cluster hash tag: a channel's keys (and its pub/sub channel, for
//! sharded pub/sub) share one slot, and so do a node's. Every script touches keys of one slot.
//! A channel id is `pub:` or `priv:` followed by the topic, in which `%`, `{` and `}` are
//! percent-encoded so that a topic can never end the hash tag early.

use headcount_cluster::ChannelKey;

/// The id of a channel inside key names: `pub:<topic>` or `priv:<topic>`, escaped.
pub(crate) fn channel_id(key: &ChannelKey) -> String {
    let mut id = String::with_capacity(key.topic.len() + 8);
    id.push_str(if key.private { "priv:" } else { "pub:" });
    for c in key.topic.chars() {
        match c {
            '%' => id.push_str("%25"),
            '{' => id.push_str("%7B"),
            '}' => id.push_str("%7D"),
            c => id.push(c),
        }
    }
    id
}

/// The channel a [`channel_id`] names.
pub(crate) fn parse_channel_id(id: &str) -> Option<ChannelKey> {
    let (private, escaped) = if let Some(rest) = id.strip_prefix("pub:") {
        (false, rest)
    } else if let Some(rest) = id.strip_prefix("priv:") {
        (true, rest)
    } else {
        return None;
    };
    let mut topic = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('%') {
        topic.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        topic.push(match code {
            "25" => '%',
            "7B" => '{',
            "7D" => '}',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    topic.push_str(rest);
    Some(ChannelKey {
        private,
        topic: topic.into(),
    })
}

/// The names of one channel's keys.
#[derive(Debug, Clone)]
pub(crate) struct ChannelKeys {
    /// The presence hash.
    pub presence: String,
    /// The sequence number.
    pub seq: String,
    /// The pub/sub channel.
    pub events: String,
}

/// The names of one node's keys.
#[derive(Debug, Clone)]
pub(crate) struct NodeKeys {
    /// The heartbeat.
    pub alive: String,
    /// The epoch.
    pub epoch: String,
    /// The index of the channels where the node owns entries.
    pub channels: String,
    /// The reaper's lock.
    pub reap: String,
}

/// The key layout under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: String,
}

impl Layout {
    /// The layout under `prefix` (which holds no brace: checked by the options).
    pub(crate) fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.to_owned(),
        }
    }

    /// The keys of the channel `key`.
    pub(crate) fn channel(&self, key: &ChannelKey) -> ChannelKeys {
        self.channel_by_id(&channel_id(key))
    }

    /// The keys of the channel with id `id`.
    pub(crate) fn channel_by_id(&self, id: &str) -> ChannelKeys {
        let p = &self.prefix;
        ChannelKeys {
            presence: format!("{p}:{{{id}}}:presence"),
            seq: format!("{p}:{{{id}}}:seq"),
            events: format!("{p}:{{{id}}}:events"),
        }
    }

    /// The channel whose pub/sub channel is `events`, if it is one of ours.
    pub(crate) fn channel_of_events(&self, events: &str) -> Option<ChannelKey> {
        let id = events
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:events")?;
        parse_channel_id(id)
    }

    /// The set of every node that may own entries.
    pub(crate) fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// The keys of node `node`.
    pub(crate) fn node(&self, node: &str) -> NodeKeys {
        let p = &self.prefix;
        NodeKeys {
            alive: format!("{p}:node:{{{node}}}:alive"),
            epoch: format!("{p}:node:{{{node}}}:epoch"),
            channels: format!("{p}:node:{{{node}}}:channels"),
            reap: format!("{p}:node:{{{node}}}:reap"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(private: bool, topic: &str) -> ChannelKey {
        ChannelKey {
            private,
            topic: topic.into(),
        }
    }

    #[test]
    fn channel_ids_escape_braces_and_round_trip() {
        for (private, topic) in [
            (false, "realtime:room1"),
            (true, "realtime:room1"),
            (false, "realtime:{weird}%7B%"),
            (false, ""),
            (true, "ünïcödé 🎉 }{"),
        ] {
            let id = channel_id(&key(private, topic));
            assert!(!id.contains('{') && !id.contains('}'), "{id}");
            assert_eq!(parse_channel_id(&id), Some(key(private, topic)));
        }
        assert_ne!(
            channel_id(&key(false, "a")),
            channel_id(&key(true, "a")),
            "public and private channels are different channels"
        );
        assert_eq!(parse_channel_id("other:x"), None);
        assert_eq!(parse_channel_id("pub:bad%zz"), None);
    }

    #[test]
    fn a_channels_keys_share_one_hash_tag() {
        let layout = Layout::new("hc");
        let k = layout.channel(&key(false, "realtime:{room}"));
        assert_eq!(k.presence, "hc:{pub:realtime:%7Broom%7D}:presence");
        assert_eq!(k.seq, "hc:{pub:realtime:%7Broom%7D}:seq");
        assert_eq!(
            layout.channel_of_events(&k.events),
            Some(key(false, "realtime:{room}"))
        );
        assert_eq!(layout.channel_of_events("other:{pub:x}:events"), None);
        let n = layout.node("abc");
        assert_eq!(n.alive, "hc:node:{abc}:alive");
        assert_eq!(n.channels, "hc:node:{abc}:channels");
    }
}
