//! A minimal WebSocket client (RFC 6455), cheap per connection.
//!
//! The load generator opens tens of thousands of sockets and reads a million frames a second, so
//! it owns its framing instead of going through a general-purpose library: one growable read
//! buffer per socket (frames are parsed in place, no copy unless fragmented), one write buffer
//! that collects every frame of a turn before a single `write_all`, and no task or channel per
//! socket beyond the one that drives it.
//!
//! * [`parse_header`] and [`encode_frame`] are the pure frame codec;
//! * [`Outbox`] collects outgoing frames (masked, as a client must);
//! * [`WsConn`] is one connected socket: the upgrade, buffered reads, message parsing.

use std::io;
use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// The largest message the generator accepts (a `presence_state` of 5,000 members is ~1 MB).
const MAX_MESSAGE: usize = 64 << 20;
/// The read buffer a socket starts with; it grows for larger frames.
const INITIAL_READ_BUFFER: usize = 4096;

/// The header of one frame, as parsed from the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whether this is the last frame of a message.
    pub fin: bool,
    /// The opcode (`OP_*`).
    pub opcode: u8,
    /// The masking key, when the frame is masked (servers do not mask).
    pub mask: Option<[u8; 4]>,
    /// Bytes taken by the header.
    pub header_len: usize,
    /// Bytes of payload that follow the header.
    pub payload_len: usize,
}

/// Parses a frame header at the start of `buf`. `Ok(None)` means more bytes are needed.
pub fn parse_header(buf: &[u8]) -> io::Result<Option<FrameHeader>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(invalid("reserved bits set (no extension was negotiated)"));
    }
    let masked = b1 & 0x80 != 0;
    let (mut header_len, payload_len) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (4, usize::from(u16::from_be_bytes([buf[2], buf[3]])))
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut len = [0; 8];
            len.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(len);
            (10, usize::try_from(len).unwrap_or(usize::MAX))
        }
        n => (2, usize::from(n)),
    };
    if payload_len > MAX_MESSAGE {
        return Err(invalid("frame too large"));
    }
    let mask = if masked {
        if buf.len() < header_len + 4 {
            return Ok(None);
        }
        let key = [
            buf[header_len],
            buf[header_len + 1],
            buf[header_len + 2],
            buf[header_len + 3],
        ];
        header_len += 4;
        Some(key)
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        mask,
        header_len,
        payload_len,
    }))
}

/// Appends one complete frame: FIN set, masked with `mask` (clients must mask every frame).
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// XORs `data` with the repeating masking key.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// The text messages of the frames waiting in `out` (unmasked), which it then forgets: what a
/// server would read. For the adapters' tests.
#[cfg(test)]
pub fn take_texts(out: &mut Outbox) -> Vec<String> {
    let mut v = Vec::new();
    let mut rest = &out.bytes[..];
    while let Some(h) = parse_header(rest).unwrap() {
        let mut p = rest[h.header_len..h.header_len + h.payload_len].to_vec();
        apply_mask(&mut p, h.mask.unwrap());
        v.push(String::from_utf8(p).unwrap());
        rest = &rest[h.header_len + h.payload_len..];
    }
    out.bytes.clear();
    v
}

/// Outgoing frames of one socket, collected during a turn and written at once.
#[derive(Debug)]
pub struct Outbox {
    /// Encoded, masked frames waiting to be written.
    pub bytes: Vec<u8>,
    /// Where a message is built before it is framed.
    scratch: Vec<u8>,
    /// Masking keys: a xorshift generator (the keys only have to vary, not be secret, against
    /// servers on this machine).
    rng: u64,
}

impl Outbox {
    /// An empty outbox whose masking keys start from `seed`.
    pub fn new(seed: u64) -> Outbox {
        Outbox {
            bytes: Vec::new(),
            scratch: Vec::new(),
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    fn mask(&mut self) -> [u8; 4] {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x as u32).to_ne_bytes()
    }

    /// Builds a message with `build` and frames it with `opcode`.
    pub fn frame(&mut self, opcode: u8, build: impl FnOnce(&mut Vec<u8>)) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        build(&mut scratch);
        let mask = self.mask();
        encode_frame(&mut self.bytes, opcode, &scratch, mask);
        self.scratch = scratch;
    }

    /// A text message built by `build`.
    pub fn text(&mut self, build: impl FnOnce(&mut Vec<u8>)) {
        self.frame(OP_TEXT, build);
    }

    /// A binary message built by `build`.
    pub fn binary(&mut self, build: impl FnOnce(&mut Vec<u8>)) {
        self.frame(OP_BINARY, build);
    }

    /// A control frame (ping, pong, close) with `payload`.
    pub fn control(&mut self, opcode: u8, payload: &[u8]) {
        let mask = self.mask();
        encode_frame(&mut self.bytes, opcode, payload, mask);
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// One message from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message (UTF-8 is not checked: the protocols parse it).
    Text(&'a [u8]),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// The server closes the connection.
    Close(Option<u16>),
}

/// Where the WebSocket endpoint is and what the upgrade request carries.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The server's address (always on this machine).
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// The request path with its query string.
    pub path: String,
    /// The `Sec-WebSocket-Protocol` to ask for, if any (`xmpp` for RFC 7395).
    pub subprotocol: Option<&'static str>,
}

/// A connected WebSocket.
#[derive(Debug)]
pub struct WsConn {
    stream: TcpStream,
    /// Received bytes; `buf[start..end]` are not parsed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A fragmented message being reassembled, and its opcode.
    frag: Vec<u8>,
    frag_opcode: u8,
    /// Whether `frag` holds a message that was handed out and must be cleared.
    frag_done: bool,
    /// Bytes received after the upgrade response (WebSocket framing included).
    pub bytes_in: u64,
}

impl WsConn {
    /// Connects (from `local`, when given, so that many sockets can share one server port
    /// without exhausting the ephemeral ports of one address) and upgrades.
    pub async fn connect(endpoint: &Endpoint, local: Option<IpAddr>) -> io::Result<WsConn> {
        let stream = match local {
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(endpoint.addr).await?
            }
            None => TcpStream::connect(endpoint.addr).await?,
        };
        stream.set_nodelay(true)?;
        let mut conn = WsConn {
            stream,
            buf: vec![0; INITIAL_READ_BUFFER],
            start: 0,
            end: 0,
            frag: Vec::new(),
            frag_opcode: 0,
            frag_done: false,
            bytes_in: 0,
        };
        conn.upgrade(endpoint).await?;
        Ok(conn)
    }

    async fn upgrade(&mut self, endpoint: &Endpoint) -> io::Result<()> {
        let nonce: [u8; 16] = {
            let mut o = Outbox::new(self.stream.local_addr()?.port().into());
            let mut n = [0u8; 16];
            for chunk in n.chunks_mut(4) {
                chunk.copy_from_slice(&o.mask());
            }
            n
        };
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            endpoint.path, endpoint.host
        );
        if let Some(p) = endpoint.subprotocol {
            request.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        request.push_str("\r\n");
        self.stream.write_all(request.as_bytes()).await?;

        let head_end = loop {
            if let Some(i) = memchr::memmem::find(&self.buf[..self.end], b"\r\n\r\n") {
                break i + 4;
            }
            if self.end == self.buf.len() {
                if self.buf.len() >= 64 * 1024 {
                    return Err(invalid("upgrade response headers too large"));
                }
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the upgrade",
                ));
            }
            self.end += n;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "101" {
            let body = String::from_utf8_lossy(&self.buf[head_end..self.end]);
            let first = head.lines().next().unwrap_or("");
            return Err(io::Error::other(format!(
                "upgrade refused: {first} {}",
                body.trim()
            )));
        }
        let expected = accept_key(&key);
        let accepted = head.lines().any(|line| {
            line.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == expected
            })
        });
        if !accepted {
            return Err(invalid("wrong Sec-WebSocket-Accept"));
        }
        self.start = head_end;
        self.bytes_in = (self.end - head_end) as u64;
        Ok(())
    }

    /// Reads whatever the socket has (at least one byte, or 0 at end of stream). Cancel-safe.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = (self.buf.len() * 2).min(MAX_MESSAGE + 16);
                if grown == self.buf.len() {
                    return Err(invalid("message too large"));
                }
                self.buf.resize(grown, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        self.bytes_in += n as u64;
        Ok(n)
    }

    /// The next complete message in the buffer, if any. Call until `None` after each
    /// [`WsConn::read_more`].
    pub fn next_message(&mut self) -> io::Result<Option<Message<'_>>> {
        if self.frag_done {
            self.frag.clear();
            self.frag_done = false;
        }
        loop {
            let available = &self.buf[self.start..self.end];
            let Some(h) = parse_header(available)? else {
                return Ok(None);
            };
            let total = h.header_len + h.payload_len;
            if available.len() < total {
                // `read_more` compacts and grows the buffer until the frame fits.
                return Ok(None);
            }
            let from = self.start + h.header_len;
            let to = from + h.payload_len;
            self.start += total;
            if let Some(mask) = h.mask {
                apply_mask(&mut self.buf[from..to], mask);
            }
            match h.opcode {
                OP_TEXT | OP_BINARY if h.fin && self.frag.is_empty() => {
                    let payload = &self.buf[from..to];
                    return Ok(Some(if h.opcode == OP_TEXT {
                        Message::Text(payload)
                    } else {
                        Message::Binary(payload)
                    }));
                }
                OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                    if h.opcode != OP_CONTINUATION {
                        self.frag.clear();
                        self.frag_opcode = h.opcode;
                    }
                    self.frag.extend_from_slice(&self.buf[from..to]);
                    if self.frag.len() > MAX_MESSAGE {
                        return Err(invalid("message too large"));
                    }
                    if h.fin {
                        self.frag_done = true;
                        return Ok(Some(if self.frag_opcode == OP_TEXT {
                            Message::Text(&self.frag)
                        } else {
                            Message::Binary(&self.frag)
                        }));
                    }
                }
                OP_PING => return Ok(Some(Message::Ping(&self.buf[from..to]))),
                OP_PONG => return Ok(Some(Message::Pong)),
                OP_CLOSE => {
                    let payload = &self.buf[from..to];
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Some(Message::Close(code)));
                }
                _ => return Err(invalid("unknown opcode")),
            }
        }
    }

    /// Writes and empties `out`.
    pub async fn flush(&mut self, out: &mut Outbox) -> io::Result<()> {
        if !out.bytes.is_empty() {
            self.stream.write_all(&out.bytes).await?;
            out.bytes.clear();
        }
        Ok(())
    }

    /// Sends a close frame and shuts the write side (best effort).
    pub async fn close(&mut self, out: &mut Outbox) {
        out.control(OP_CLOSE, &1000u16.to_be_bytes());
        let _ = self.flush(out).await;
        let _ = self.stream.shutdown().await;
    }
}

/// The `Sec-WebSocket-Accept` value for a key (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parses_unmasked_server_frames() {
        // RFC 6455 §5.7: a single-frame unmasked text message "Hello".
        let frame = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let h = parse_header(&frame).unwrap().unwrap();
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                opcode: OP_TEXT,
                mask: None,
                header_len: 2,
                payload_len: 5
            }
        );
        assert_eq!(parse_header(&frame[..1]).unwrap(), None);
        // 256 bytes binary: 16-bit length.
        let h = parse_header(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.header_len, h.payload_len), (4, 256));
        assert_eq!(parse_header(&[0x82, 0x7E, 0x01]).unwrap(), None);
        // 64 KiB binary: 64-bit length.
        let h = parse_header(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.header_len, h.payload_len), (10, 65536));
        assert!(
            parse_header(&[0xC1, 0x00]).is_err(),
            "RSV1 without extension"
        );
    }

    #[test]
    fn encodes_masked_frames_like_the_rfc_example() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let mut out = Vec::new();
        encode_frame(&mut out, OP_TEXT, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        let h = parse_header(&out).unwrap().unwrap();
        let mut payload = out[h.header_len..].to_vec();
        apply_mask(&mut payload, h.mask.unwrap());
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn long_frames_use_extended_lengths() {
        for len in [125usize, 126, 65535, 65536] {
            let mut out = Vec::new();
            let payload = vec![7u8; len];
            encode_frame(&mut out, OP_BINARY, &payload, [1, 2, 3, 4]);
            let h = parse_header(&out).unwrap().unwrap();
            assert_eq!(h.payload_len, len);
            assert_eq!(out.len(), h.header_len + len);
        }
    }
}
