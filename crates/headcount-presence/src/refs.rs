//! `phx_ref`: the unique reference of one meta.
//!
//! Phoenix.Tracker makes it from 12 bytes (system time in nanoseconds, a hash of the node and
//! process, a unique integer) encoded as unpadded base64url: 16 characters. Clients compare refs
//! only for equality, so any unique 16-character string works; headcount keeps the same shape.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A meta's unique reference: 16 base64url characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhxRef([u8; 16]);

impl PhxRef {
    /// The reference built from its 12 source bytes.
    pub fn from_parts(time_ns: u64, node: u16, unique: u16) -> PhxRef {
        let mut raw = [0u8; 12];
        raw[..8].copy_from_slice(&time_ns.to_be_bytes());
        raw[8..10].copy_from_slice(&node.to_be_bytes());
        raw[10..].copy_from_slice(&unique.to_be_bytes());
        let mut out = [0u8; 16];
        let written = URL_SAFE_NO_PAD
            .encode_slice(raw, &mut out)
            .expect("12 bytes are 16 base64 characters");
        debug_assert_eq!(written, 16);
        PhxRef(out)
    }

    /// The reference as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("base64 is ASCII")
    }

    /// The reference whose text is `text` (what [`PhxRef::as_str`] gives), if it is 16 base64url
    /// characters: how a reference comes back from storage or another node.
    pub fn parse(text: &str) -> Option<PhxRef> {
        let bytes: [u8; 16] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .then_some(PhxRef(bytes))
    }
}

impl fmt::Debug for PhxRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for PhxRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Makes unique [`PhxRef`]s for one node.
///
/// The time part never goes backwards and grows by at least one nanosecond per reference, so
/// two references from one generator never collide, even with a coarse or stepped clock.
#[derive(Debug, Clone)]
pub struct RefGenerator {
    node: u16,
    last_ns: u64,
    counter: u16,
}

impl RefGenerator {
    /// A generator for the node identified by `node` (any value that differs between nodes).
    pub fn new(node: u16) -> RefGenerator {
        RefGenerator {
            node,
            last_ns: 0,
            counter: 0,
        }
    }

    /// The next reference, given the current time in nanoseconds since the Unix epoch.
    pub fn next(&mut self, now_ns: u64) -> PhxRef {
        self.last_ns = now_ns.max(self.last_ns + 1);
        self.counter = self.counter.wrapping_add(1);
        PhxRef::from_parts(self.last_ns, self.node, self.counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_16_url_safe_characters_and_unique_under_a_stuck_clock() {
        let mut g = RefGenerator::new(7);
        let refs: Vec<PhxRef> = (0..100_000)
            .map(|_| g.next(1_700_000_000_000_000_000))
            .collect();
        let mut sorted = refs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), refs.len());
        for r in &refs[..10] {
            assert_eq!(r.as_str().len(), 16);
            assert!(
                r.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
    }

    #[test]
    fn parse_gives_back_what_as_str_wrote() {
        let r = RefGenerator::new(3).next(1_700_000_000_000_000_000);
        assert_eq!(PhxRef::parse(r.as_str()), Some(r));
        assert_eq!(PhxRef::parse("too-short"), None);
        assert_eq!(PhxRef::parse("sixteen-chars!!!"), None);
    }
}
