//! An echo server on headcount's own WebSocket layer (the reader, the writer task, the close
//! handshake and the limits the server uses), for WebSocket conformance suites: they send
//! messages and expect them back.
//!
//! ```sh
//! cargo run --release -p headcount-server --example ws_echo -- 127.0.0.1:9001
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use headcount_protocol::Serializer;
use headcount_server::conn::Conn;
use headcount_server::driver::{self, Echo};
use headcount_server::ws::handshake::accept_key;
use headcount_server::{Config, Hub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let mut config = Config::new("unused");
    // Conformance suites send messages of up to 16 MiB and keep connections briefly idle.
    config.max_frame_size = 20 << 20;
    config.max_message_size = 20 << 20;
    config.outbox_limit = 64 << 20;
    config.idle_timeout = Duration::from_secs(600);
    let hub = Arc::new(Hub::new(config));
    let listener = TcpListener::bind(&addr).await?;
    eprintln!(
        "echoing WebSocket messages on ws://{}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(hub.clone(), stream));
    }
}

async fn serve(hub: Arc<Hub>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let end = loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > 16 * 1024 {
            return;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let key = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    });
    let Some(key) = key else {
        let _ = stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        accept_key(key.as_bytes())
    );
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    let prefix = Bytes::copy_from_slice(&head[end..]);
    let conn = Arc::new(Conn::new(
        hub.next_id(),
        Serializer::V2,
        hub.config.outbox_limit,
        hub.clock.now(),
    ));
    let (read, write) = stream.into_split();
    driver::run(hub, conn.clone(), Echo(conn), read, write, prefix).await;
}
