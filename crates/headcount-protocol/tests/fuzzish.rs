//! Random input never panics a decoder.

use headcount_protocol::{Serializer, decode_binary, decode_text};
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        for s in [Serializer::V1, Serializer::V2] {
            let _ = decode_text(s, &bytes);
            let _ = decode_binary(s, &bytes);
        }
    }

    #[test]
    fn kind3_with_random_lengths_never_panics(
        lens in proptest::collection::vec(any::<u8>(), 6),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut frame = vec![3];
        frame.extend(lens);
        frame.extend(tail);
        let _ = decode_binary(Serializer::V2, &frame);
    }
}
