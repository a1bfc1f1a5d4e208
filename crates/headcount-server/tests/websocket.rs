//! RFC 6455 rules at the socket level, with hand-made frames over raw TCP.

use headcount_testkit::raw::read_server_frame;
use headcount_testkit::{TestServer, anon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn handshake(server: &TestServer) -> TcpStream {
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /realtime/v1/websocket?vsn=2.0.0&apikey={} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        anon()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    tcp
}

fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 65535 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [1, 2, 3, 4];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Reads server frames until a close frame; returns its code.
async fn close_code(tcp: &mut TcpStream) -> Option<u16> {
    let read = async {
        loop {
            let Ok((opcode, payload)) = read_server_frame(tcp).await else {
                return None;
            };
            if opcode == 8 {
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .expect("the server answers")
}

#[tokio::test]
async fn rfc_violations_close_with_the_rfc_codes() {
    let server = TestServer::start().await;
    let heartbeat = br#"[null,"1","phoenix","heartbeat",{}]"#;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", frame(true, 1, heartbeat, false), 1002),
        ("invalid UTF-8", frame(true, 1, &[0xc3, 0x28], true), 1007),
        (
            "reserved bits",
            {
                let mut f = frame(true, 1, heartbeat, true);
                f[0] |= 0x40;
                f
            },
            1002,
        ),
        ("fragmented ping", frame(false, 9, b"x", true), 1002),
        ("oversized ping", frame(true, 9, &[0; 126], true), 1002),
        ("orphan continuation", frame(true, 0, b"x", true), 1002),
        ("unknown opcode", frame(true, 0xB, b"", true), 1002),
        ("bad close code", frame(true, 8, &[0x03, 0xED], true), 1002),
    ];
    for (name, bytes, code) in cases {
        let mut tcp = handshake(&server).await;
        tcp.write_all(&bytes).await.unwrap();
        assert_eq!(close_code(&mut tcp).await, Some(code), "{name}");
    }
}

#[tokio::test]
async fn close_frames_are_echoed() {
    let server = TestServer::start().await;
    let mut tcp = handshake(&server).await;
    tcp.write_all(&frame(true, 8, &[0x0B, 0xB8, b'b', b'y', b'e'], true))
        .await
        .unwrap();
    assert_eq!(close_code(&mut tcp).await, Some(3000));
}

#[tokio::test]
async fn frame_size_limit_is_exact() {
    let limit = 1000;
    let server = TestServer::start_with(|c| {
        c.max_frame_size = limit;
        c.max_message_size = 4 * limit;
    })
    .await;
    // N: accepted (a heartbeat padded with spaces to exactly the limit).
    let mut text = br#"[null,"1","phoenix","heartbeat",{}]"#.to_vec();
    text.resize(limit, b' ');
    let mut tcp = handshake(&server).await;
    tcp.write_all(&frame(true, 1, &text, true)).await.unwrap();
    let mut reply = [0u8; 2];
    tcp.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[0], 0x81, "a text reply, not a close");
    // N + 1: closed with 1009.
    text.push(b' ');
    let mut tcp = handshake(&server).await;
    tcp.write_all(&frame(true, 1, &text, true)).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, Some(1009));
}

#[tokio::test]
async fn fragmented_messages_are_reassembled_and_limited() {
    let server = TestServer::start_with(|c| {
        c.max_frame_size = 1000;
        c.max_message_size = 1500;
    })
    .await;
    let text = br#"[null,"1","phoenix","heartbeat",{}]"#;
    let mut tcp = handshake(&server).await;
    let mut bytes = frame(false, 1, &text[..10], true);
    bytes.extend(frame(true, 9, b"ping", true));
    bytes.extend(frame(true, 0, &text[10..], true));
    tcp.write_all(&bytes).await.unwrap();
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(head, [0x8A, 4], "the pong comes first");
    let mut pong = [0u8; 4];
    tcp.read_exact(&mut pong).await.unwrap();
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 0x81, "then the heartbeat reply");

    let mut tcp = handshake(&server).await;
    let mut bytes = frame(false, 2, &[0; 1000], true);
    bytes.extend(frame(true, 0, &[0; 501], true));
    tcp.write_all(&bytes).await.unwrap();
    assert_eq!(
        close_code(&mut tcp).await,
        Some(1009),
        "1,501 bytes over a 1,500-byte message limit"
    );
}
