//! Received bytes into messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, Bytes, BytesMut};

use super::close_code;
use super::frame::{HeaderError, Opcode, parse_header, unmask};

/// A complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message, checked to be UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping: answer with a pong carrying the same bytes.
    Ping(Bytes),
    /// A pong (nothing to do).
    Pong,
    /// A close frame, with its status code when it had one.
    Close(Option<u16>),
}

/// Why the connection must close, and with which code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A violation of RFC 6455: close 1002.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8: close 1007.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A frame or message above the configured limit: close 1009.
    #[error("message too big")]
    TooBig,
    /// A large message would take the node's buffered input past its budget: close 1013.
    #[error("server busy: input buffer full")]
    Busy,
}

impl WsError {
    /// The close code the RFC asks for.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => close_code::PROTOCOL_ERROR,
            WsError::InvalidUtf8 => close_code::INVALID_PAYLOAD,
            WsError::TooBig => close_code::TOO_BIG,
            WsError::Busy => close_code::TRY_AGAIN_LATER,
        }
    }
}

impl From<HeaderError> for WsError {
    fn from(e: HeaderError) -> WsError {
        WsError::Protocol(match e {
            HeaderError::ReservedBits => "reserved bits set",
            HeaderError::UnknownOpcode(_) => "unknown opcode",
            HeaderError::ControlTooLong => "control frame too long",
            HeaderError::FragmentedControl => "fragmented control frame",
            HeaderError::BadLength => "invalid payload length",
        })
    }
}

/// A message is "large" once it holds more than this many bytes: only large messages are
/// refused by the [`InputBudget`], so heartbeats and small pushes always get through.
pub const LARGE_MESSAGE: usize = 64 * 1024;

/// The node-wide budget for bytes of partially received messages, shared by every socket's
/// [`WsReader`]. Each reader charges what it holds (and, for a frame whose header has arrived,
/// the whole frame it announced) and gives it back as messages complete or the socket goes.
#[derive(Debug)]
pub struct InputBudget {
    used: AtomicUsize,
    limit: usize,
}

impl InputBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> InputBudget {
        InputBudget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes charged now, across every reader.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `n` bytes; unless `force`, refuses (charging nothing) past the limit.
    fn take(&self, n: usize, force: bool) -> bool {
        let before = self.used.fetch_add(n, Ordering::AcqRel);
        if !force && before.saturating_add(n) > self.limit {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Assembles client messages from the bytes read off the socket.
///
/// The caller appends bytes to [`WsReader::buffer`] and calls [`WsReader::next_message`] until
/// it returns `Ok(None)` ("not enough data yet").
#[derive(Debug)]
pub struct WsReader {
    buf: BytesMut,
    /// The message being reassembled from fragments: its opcode and the bytes so far.
    partial: Option<(Opcode, BytesMut)>,
    max_frame: usize,
    max_message: usize,
    initial_capacity: usize,
    /// The node's budget for buffered input, and what this reader has charged to it.
    budget: Option<Arc<InputBudget>>,
    charged: usize,
    /// Data messages completed so far: the driver's clock for an incomplete message restarts
    /// when this moves (control frames do not move it, so pings cannot keep a fragment alive).
    completed: u64,
}

impl WsReader {
    /// A reader that refuses frames above `max_frame` bytes and messages above `max_message`.
    pub fn new(initial_capacity: usize, max_frame: usize, max_message: usize) -> WsReader {
        WsReader {
            buf: BytesMut::with_capacity(initial_capacity),
            partial: None,
            max_frame,
            max_message,
            initial_capacity,
            budget: None,
            charged: 0,
            completed: 0,
        }
    }

    /// The same reader, charging what it buffers to `budget`.
    pub fn with_budget(mut self, budget: Arc<InputBudget>) -> WsReader {
        self.budget = Some(budget);
        self
    }

    /// Whether part of a message (a fragment, or some bytes of a frame) is waiting for more.
    pub fn is_incomplete(&self) -> bool {
        self.partial.is_some() || !self.buf.is_empty()
    }

    /// Data messages (text or binary) completed so far.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    fn partial_len(&self) -> usize {
        self.partial.as_ref().map_or(0, |(_, data)| data.len())
    }

    /// Brings the charge to `target` bytes. With `check`, a large target that does not fit
    /// the budget is refused and the charge left as it was.
    fn charge(&mut self, target: usize, check: bool) -> Result<(), WsError> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        if target > self.charged {
            let force = !check || target <= LARGE_MESSAGE;
            if !budget.take(target - self.charged, force) {
                return Err(WsError::Busy);
            }
        } else {
            budget.give_back(self.charged - target);
        }
        self.charged = target;
        Ok(())
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, WsError> {
        let next = self.next_inner();
        if let Ok(Some(Message::Text(_) | Message::Binary(_))) = &next {
            self.completed += 1;
        }
        if !matches!(next, Ok(None)) {
            // Whatever is still buffered stays charged; an incomplete frame re-charged what
            // it announced before returning `Ok(None)`.
            let held = self.partial_len() + self.buf.len();
            let _ = self.charge(held, false);
        }
        next
    }

    /// The buffer to read into, with spare room guaranteed. A buffer that grew for a large
    /// message is given back once it is empty, so idle connections stay small.
    pub fn buffer(&mut self) -> &mut BytesMut {
        if self.buf.is_empty() && self.buf.capacity() > 16 * self.initial_capacity.max(4096) {
            self.buf = BytesMut::with_capacity(self.initial_capacity);
        }
        if self.buf.capacity() == self.buf.len() {
            self.buf.reserve(self.initial_capacity.max(512));
        }
        &mut self.buf
    }

    /// Bytes received from the client before the WebSocket began (left over by the HTTP layer).
    pub fn push_prefix(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn next_inner(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            let Some(header) = parse_header(&self.buf)? else {
                let held = self.partial_len() + self.buf.len();
                self.charge(held, false)?;
                return Ok(None);
            };
            let Some(mask) = header.mask else {
                return Err(WsError::Protocol("unmasked client frame"));
            };
            if header.payload_len > self.max_frame as u64 {
                return Err(WsError::TooBig);
            }
            let total = header.header_len + header.payload_len as usize;
            if self.buf.len() < total {
                // Charge the whole frame the header announced, before its bytes arrive: that
                // is when a large message is refused, so sockets racing each other cannot all
                // fit under the budget and then all grow past it.
                let announced = self.partial_len() + total.max(self.buf.len());
                self.charge(announced, true)?;
                // Grow toward the frame as its bytes arrive, not all at once on a header's word:
                // a header alone must not make a connection reserve `max_frame` bytes.
                self.buf.reserve((total - self.buf.len()).min(64 * 1024));
                return Ok(None);
            }
            let mut payload = self.buf.split_to(total);
            payload.advance(header.header_len);
            unmask(&mut payload, mask);

            match header.opcode {
                Opcode::Ping => return Ok(Some(Message::Ping(payload.freeze()))),
                Opcode::Pong => return Ok(Some(Message::Pong)),
                Opcode::Close => return close_message(&payload).map(Some),
                Opcode::Text | Opcode::Binary => {
                    if self.partial.is_some() {
                        return Err(WsError::Protocol("new message inside a fragmented one"));
                    }
                    if header.fin {
                        return finish(header.opcode, payload).map(Some);
                    }
                    self.partial = Some((header.opcode, payload));
                    let held = self.partial_len() + self.buf.len();
                    self.charge(held, true)?;
                }
                Opcode::Continuation => {
                    let Some((opcode, mut data)) = self.partial.take() else {
                        return Err(WsError::Protocol("continuation without a message"));
                    };
                    if data.len() + payload.len() > self.max_message {
                        return Err(WsError::TooBig);
                    }
                    data.extend_from_slice(&payload);
                    if header.fin {
                        return finish(opcode, data).map(Some);
                    }
                    self.partial = Some((opcode, data));
                    // Many small fragments grow a message as surely as one large frame.
                    let held = self.partial_len() + self.buf.len();
                    self.charge(held, true)?;
                }
            }
        }
    }
}

impl Drop for WsReader {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.charged);
        }
    }
}

fn finish(opcode: Opcode, data: BytesMut) -> Result<Message, WsError> {
    if opcode == Opcode::Text {
        std::str::from_utf8(&data).map_err(|_| WsError::InvalidUtf8)?;
        Ok(Message::Text(data.freeze()))
    } else {
        Ok(Message::Binary(data.freeze()))
    }
}

fn close_message(payload: &[u8]) -> Result<Message, WsError> {
    match payload {
        [] => Ok(Message::Close(None)),
        [_] => Err(WsError::Protocol("close payload of one byte")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(WsError::Protocol("invalid close code"));
            }
            std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Message::Close(Some(code)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn feed(reader: &mut WsReader, bytes: &[u8]) -> Vec<Result<Message, WsError>> {
        reader.buffer().extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            match reader.next_message() {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    fn reader() -> WsReader {
        WsReader::new(64, 1000, 2000)
    }

    #[test]
    fn messages_arrive_byte_by_byte() {
        let mut r = reader();
        let frame = client_frame(true, 1, b"hello");
        let mut got = Vec::new();
        for b in &frame {
            got.extend(feed(&mut r, &[*b]));
        }
        assert_eq!(got, vec![Ok(Message::Text(Bytes::from_static(b"hello")))]);
    }

    #[test]
    fn fragments_with_interleaved_ping_are_reassembled() {
        let mut r = reader();
        let mut bytes = client_frame(false, 1, b"he");
        bytes.extend(client_frame(true, 9, b"p"));
        bytes.extend(client_frame(false, 0, b"ll"));
        bytes.extend(client_frame(true, 0, b"o"));
        assert_eq!(
            feed(&mut r, &bytes),
            vec![
                Ok(Message::Ping(Bytes::from_static(b"p"))),
                Ok(Message::Text(Bytes::from_static(b"hello")))
            ]
        );
    }

    #[test]
    fn violations_map_to_close_codes() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            ([0x81, 0x02, b'h', b'i'].to_vec(), 1002),    // unmasked
            (client_frame(true, 0, b"x"), 1002),          // continuation without start
            (client_frame(true, 1, &[0xff, 0xfe]), 1007), // invalid UTF-8
            (client_frame(true, 8, &[0x03]), 1002),       // one-byte close
            (client_frame(true, 8, &[0x03, 0xED]), 1002), // close code 1005
            (client_frame(true, 8, &[0x03, 0xE8, 0xff]), 1007), // close reason not UTF-8
            (client_frame(true, 2, &[0; 1001]), 1009),    // frame too big
            (client_frame(true, 3, b""), 1002),           // unknown opcode
        ];
        for (bytes, code) in cases {
            let got = feed(&mut reader(), &bytes);
            match got.last() {
                Some(Err(e)) => assert_eq!(e.close_code(), code, "{bytes:?}"),
                other => panic!("{bytes:?} gave {other:?}"),
            }
        }
        let mut start_twice = client_frame(false, 1, b"a");
        start_twice.extend(client_frame(true, 1, b"b"));
        assert_eq!(
            feed(&mut reader(), &start_twice),
            vec![Err(WsError::Protocol(
                "new message inside a fragmented one"
            ))]
        );
    }

    #[test]
    fn message_limit_counts_every_fragment() {
        let mut r = reader();
        let mut bytes = Vec::new();
        bytes.extend(client_frame(false, 2, &[0; 900]));
        bytes.extend(client_frame(false, 0, &[0; 900]));
        bytes.extend(client_frame(true, 0, &[0; 300]));
        assert_eq!(feed(&mut r, &bytes), vec![Err(WsError::TooBig)]);
        let mut r = reader();
        let mut bytes = client_frame(false, 2, &[0; 1000]);
        bytes.extend(client_frame(true, 0, &[0; 1000]));
        assert!(
            matches!(feed(&mut r, &bytes).as_slice(), [Ok(Message::Binary(b))] if b.len() == 2000)
        );
    }

    #[test]
    fn frame_limit_is_exact() {
        assert!(matches!(
            feed(&mut reader(), &client_frame(true, 2, &[1; 1000]))[..],
            [Ok(Message::Binary(_))]
        ));
        assert_eq!(
            feed(&mut reader(), &client_frame(true, 2, &[1; 1001])),
            vec![Err(WsError::TooBig)]
        );
    }

    #[test]
    fn a_large_frame_is_charged_when_its_header_arrives_and_given_back_when_done() {
        let budget = Arc::new(InputBudget::new(300_000));
        let reader = || WsReader::new(64, 1_000_000, 1_000_000).with_budget(budget.clone());
        let mut a = reader();
        let frame = client_frame(true, 2, &[0; 150_000]);
        assert!(feed(&mut a, &frame[..20]).is_empty());
        assert_eq!(budget.used(), 150_014, "header + announced payload");
        // N: a second large frame that fills the budget exactly.
        let mut b = reader();
        let fits = client_frame(true, 2, &[0; 149_972]);
        assert!(feed(&mut b, &fits[..20]).is_empty());
        assert_eq!(budget.used(), 300_000);
        // A small message always gets through, even with the budget spent.
        let mut small = reader();
        assert_eq!(
            feed(&mut small, &client_frame(true, 2, &[0; 1000])).len(),
            1
        );
        assert!(matches!(
            feed(&mut b, &fits[20..])[..],
            [Ok(Message::Binary(_))]
        ));
        assert_eq!(budget.used(), 150_014);
        // N + 1: one byte more than what is left is refused.
        let mut c = reader();
        let too_big = client_frame(true, 2, &[0; 149_973]);
        assert_eq!(feed(&mut c, &too_big[..20]), vec![Err(WsError::Busy)]);
        drop(c);
        assert!(matches!(
            feed(&mut a, &frame[20..])[..],
            [Ok(Message::Binary(_))]
        ));
        assert_eq!(budget.used(), 0);
        // Fragments count as they accumulate, and a reader gives back what it held when dropped.
        let mut d = reader();
        assert!(feed(&mut d, &client_frame(false, 2, &[0; 1000])).is_empty());
        assert_eq!(budget.used(), 1000);
        drop(d);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn pings_do_not_count_as_completed_messages() {
        let mut r = reader();
        assert!(feed(&mut r, &client_frame(false, 1, b"he")).is_empty());
        assert_eq!(feed(&mut r, &client_frame(true, 9, b"p")).len(), 1);
        assert!(r.is_incomplete());
        assert_eq!(r.completed(), 0);
        assert_eq!(feed(&mut r, &client_frame(true, 0, b"llo")).len(), 1);
        assert!(!r.is_incomplete());
        assert_eq!(r.completed(), 1);
    }

    #[test]
    fn close_frames() {
        assert_eq!(
            feed(&mut reader(), &client_frame(true, 8, b"")),
            vec![Ok(Message::Close(None))]
        );
        assert_eq!(
            feed(
                &mut reader(),
                &client_frame(true, 8, &[0x03, 0xE8, b'o', b'k'])
            ),
            vec![Ok(Message::Close(Some(1000)))]
        );
    }
}
