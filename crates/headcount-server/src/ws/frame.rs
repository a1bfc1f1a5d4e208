//! Frame headers and server frames.

use bytes::Bytes;

/// A frame's opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// Continues a fragmented message.
    Continuation,
    /// A text message (or its first fragment).
    Text,
    /// A binary message (or its first fragment).
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The final fragment of its message.
    pub fin: bool,
    /// The opcode.
    pub opcode: Opcode,
    /// The client's masking key (every client frame must have one).
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
    /// The header's own length in bytes.
    pub header_len: usize,
}

/// A header that breaks RFC 6455.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// RSV1-3 set without a negotiated extension.
    #[error("reserved bits set")]
    ReservedBits,
    /// An opcode the RFC does not define.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame payload above 125 bytes")]
    ControlTooLong,
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A 64-bit length with its most significant bit set.
    #[error("invalid payload length")]
    BadLength,
}

/// Parses the header at the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(HeaderError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(HeaderError::UnknownOpcode(b0 & 0x0F))?;
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(HeaderError::BadLength);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode.is_control() {
        if payload_len > 125 {
            return Err(HeaderError::ControlTooLong);
        }
        if !fin {
            return Err(HeaderError::FragmentedControl);
        }
    }
    let mask = if masked {
        let Some(m) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        payload_len,
        header_len: at,
    }))
}

/// XORs `data` with the masking key, starting at key offset 0.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
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

/// The room a server frame header can take: 2 bytes plus an 8-byte length.
pub const MAX_SERVER_HEADER: usize = 10;

/// A buffer for building one server frame: the payload is written after room for the header,
/// and [`FrameBuilder::finish`] puts the header in front without copying the payload.
#[derive(Debug)]
pub struct FrameBuilder {
    buf: Vec<u8>,
}

impl FrameBuilder {
    /// A builder with room for `payload_hint` bytes of payload.
    pub fn with_capacity(payload_hint: usize) -> FrameBuilder {
        let mut buf = Vec::with_capacity(MAX_SERVER_HEADER + payload_hint);
        buf.resize(MAX_SERVER_HEADER, 0);
        FrameBuilder { buf }
    }

    /// The payload buffer to append to.
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The finished frame: one unfragmented, unmasked frame with this opcode.
    pub fn finish(self, opcode: Opcode) -> Bytes {
        let mut buf = self.buf;
        let len = buf.len() - MAX_SERVER_HEADER;
        let mut header = [0u8; MAX_SERVER_HEADER];
        header[0] = 0x80 | opcode.bits();
        let header_len = if len < 126 {
            header[1] = len as u8;
            2
        } else if len <= usize::from(u16::MAX) {
            header[1] = 126;
            header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        let start = MAX_SERVER_HEADER - header_len;
        buf[start..MAX_SERVER_HEADER].copy_from_slice(&header[..header_len]);
        Bytes::from(buf).slice(start..)
    }
}

/// One unfragmented server frame holding `payload`.
pub fn encode_frame(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut b = FrameBuilder::with_capacity(payload.len());
    b.payload().extend_from_slice(payload);
    b.finish(opcode)
}

/// A close frame with a status code and a reason (cut to fit the 125-byte control limit).
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode_frame(Opcode::Close, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_use_the_shortest_length() {
        assert_eq!(
            &encode_frame(Opcode::Text, b"hi")[..],
            &[0x81, 2, b'h', b'i']
        );
        let f = encode_frame(Opcode::Binary, &[7; 126]);
        assert_eq!(&f[..4], &[0x82, 126, 0, 126]);
        assert_eq!(f.len(), 130);
        let f = encode_frame(Opcode::Text, &vec![b'a'; 70_000]);
        assert_eq!(&f[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(f.len(), 70_010);
    }

    #[test]
    fn headers_parse_incrementally() {
        let frame = [0x81, 0x85, 1, 2, 3, 4, 0, 0, 0, 0, 0];
        for n in 0..6 {
            assert_eq!(parse_header(&frame[..n]), Ok(None));
        }
        let h = parse_header(&frame).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, h.header_len),
            (true, Opcode::Text, Some([1, 2, 3, 4]), 5, 6)
        );
    }

    #[test]
    fn rfc_violations_are_errors() {
        assert_eq!(parse_header(&[0xC1, 0x80]), Err(HeaderError::ReservedBits));
        assert_eq!(
            parse_header(&[0x83, 0x80]),
            Err(HeaderError::UnknownOpcode(3))
        );
        assert_eq!(
            parse_header(&[0x89, 0xFE, 0, 126]),
            Err(HeaderError::ControlTooLong)
        );
        assert_eq!(
            parse_header(&[0x09, 0x80]),
            Err(HeaderError::FragmentedControl)
        );
        assert_eq!(
            parse_header(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(HeaderError::BadLength)
        );
    }

    #[test]
    fn unmask_round_trips_at_every_length() {
        for len in 0..20 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut data = original.clone();
            unmask(&mut data, [9, 8, 7, 6]);
            for (i, b) in data.iter().enumerate() {
                assert_eq!(*b, original[i] ^ [9, 8, 7, 6][i % 4]);
            }
            unmask(&mut data, [9, 8, 7, 6]);
            assert_eq!(data, original);
        }
    }

    #[test]
    fn close_reasons_are_cut_at_a_char_boundary() {
        let f = encode_close(1000, &"é".repeat(100));
        assert!(f.len() <= 2 + 125);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
