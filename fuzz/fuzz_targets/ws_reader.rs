//! The WebSocket reader on arbitrary client bytes.
//!
//! Input layout: `[split, limits, capacity, stream...]`.
//! * `split`: 0 feeds the stream in one piece; any other value seeds the chunk sizes;
//! * `limits`: picks `max_frame` (low 3 bits) and `max_message` (next 3 bits) from `LIMITS`;
//!   bit 6 hands the first chunk to `push_prefix` (bytes left over by the HTTP layer);
//! * `capacity`: picks the initial buffer capacity;
//! * `stream`: the bytes a client sends after the handshake.
//!
//! Checks, besides "never panics":
//! * the messages and the final error do not depend on how the bytes were split;
//! * text messages and close reasons are UTF-8, pings fit a control frame, and no message is
//!   larger than the limits allow;
//! * `parse_header` on the whole stream agrees with itself on every prefix.

#![no_main]

use headcount_server::ws::frame::{Header, Opcode, parse_header};
use headcount_server::ws::{Message, WsError, WsReader};
use libfuzzer_sys::fuzz_target;

const LIMITS: [usize; 8] = [0, 1, 125, 126, 1000, 2000, 65_536, 5_000_000];
const CAPACITIES: [usize; 4] = [0, 16, 1024, 8192];

#[derive(Clone, Copy)]
struct Config {
    max_frame: usize,
    max_message: usize,
    capacity: usize,
    prefix: bool,
}

type Outcome = (Vec<Message>, Option<WsError>);

/// Feeds `chunks` in order, draining messages after each, until an error.
fn run<'a>(cfg: Config, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut reader = WsReader::new(cfg.capacity, cfg.max_frame, cfg.max_message);
    let mut messages = Vec::new();
    for (i, chunk) in chunks.into_iter().enumerate() {
        if i == 0 && cfg.prefix {
            reader.push_prefix(chunk);
        } else {
            let buf = reader.buffer();
            assert!(buf.capacity() > buf.len(), "buffer() must leave spare room");
            buf.extend_from_slice(chunk);
        }
        loop {
            match reader.next_message() {
                Ok(Some(m)) => {
                    check_message(cfg, &m);
                    messages.push(m);
                }
                Ok(None) => break,
                Err(e) => return (messages, Some(e)),
            }
        }
    }
    (messages, None)
}

fn check_message(cfg: Config, m: &Message) {
    let largest = cfg.max_frame.max(cfg.max_message);
    match m {
        Message::Text(t) => {
            assert!(std::str::from_utf8(t).is_ok(), "text message is not UTF-8");
            assert!(
                t.len() <= largest,
                "text of {} bytes passed the limits",
                t.len()
            );
        }
        Message::Binary(b) => {
            assert!(
                b.len() <= largest,
                "binary of {} bytes passed the limits",
                b.len()
            );
        }
        Message::Ping(p) => assert!(p.len() <= 125, "ping payload of {} bytes", p.len()),
        Message::Pong => {}
        Message::Close(code) => {
            if let Some(code) = code {
                assert!(
                    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999),
                    "close code {code} accepted"
                );
            }
        }
    }
}

/// Chunk lengths from a small xorshift generator, so mutating the stream never moves the cuts.
fn chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let max = 1 + usize::from(seed % 32);
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (1 + state as usize % max).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

fn check_header(buf: &[u8]) {
    let Ok(parsed) = parse_header(buf) else {
        return;
    };
    let Some(h) = parsed else {
        return;
    };
    let Header {
        fin,
        opcode,
        mask,
        payload_len,
        header_len,
    } = h;
    assert!(
        header_len <= buf.len(),
        "header_len {header_len} > {}",
        buf.len()
    );
    let len_bytes = match buf[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask_bytes = if mask.is_some() { 4 } else { 0 };
    assert_eq!(header_len, 2 + len_bytes + mask_bytes);
    assert!(payload_len >> 63 == 0);
    if opcode.is_control() {
        assert!(fin && payload_len <= 125, "bad control header accepted");
    }
    assert_eq!(
        opcode == Opcode::Continuation,
        buf[0] & 0x0F == 0,
        "opcode mismatch"
    );
    // The header alone parses the same, and every shorter prefix asks for more bytes.
    assert_eq!(parse_header(&buf[..header_len]), Ok(Some(h)));
    for n in 0..header_len {
        assert_eq!(parse_header(&buf[..n]), Ok(None), "prefix of {n} bytes");
    }
}

fuzz_target!(|data: &[u8]| {
    check_header(data);
    let [split, limits, capacity, stream @ ..] = data else {
        return;
    };
    if let Some(rest) = data.get(3..) {
        check_header(rest);
    }
    let cfg = Config {
        max_frame: LIMITS[usize::from(limits & 7)],
        max_message: LIMITS[usize::from((limits >> 3) & 7)],
        capacity: CAPACITIES[usize::from(capacity & 3)],
        prefix: limits & 0x40 != 0,
    };
    let whole = run(cfg, [stream]);
    if *split != 0 {
        let pieces = run(cfg, chunks(stream, *split));
        assert_eq!(whole, pieces, "splitting the bytes changed the outcome");
    }
    // Byte by byte, the slowest way a socket can deliver.
    if stream.len() <= 512 {
        let bytes = run(cfg, stream.chunks(1));
        assert_eq!(whole, bytes, "byte-by-byte delivery changed the outcome");
    }
});
