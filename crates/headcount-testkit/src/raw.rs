//! WebSocket frames by hand, for tests that must send what no well-behaved client sends
//! (fragments left unfinished, frames over the limit, floods) and read the server's answer
//! byte for byte.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The header of a client frame announcing `len` payload bytes, with the all-zero mask (legal,
/// and the payload then goes on the wire as is).
pub fn client_header(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match len {
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
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// A complete client frame: [`client_header`] and the payload.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = client_header(fin, opcode, payload.len());
    out.extend_from_slice(payload);
    out
}

/// Reads one server frame (server frames are unmasked): its opcode and payload.
pub async fn read_server_frame(rd: &mut (impl AsyncRead + Unpin)) -> io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    rd.read_exact(&mut h).await?;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        rd.read_exact(&mut b).await?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        rd.read_exact(&mut b).await?;
        len = u64::from_be_bytes(b);
    }
    let mut payload = vec![0u8; len as usize];
    rd.read_exact(&mut payload).await?;
    Ok((h[0] & 0x0f, payload))
}
