//! The abusive clients of the soak test, on raw TCP with hand-made WebSocket frames so that
//! they can send what no WebSocket library would (frames over the limit, fragments that never
//! end) and so that every error they meet is a value, not a panic: the server may refuse or
//! cut them however it likes.

use std::io;
use std::time::Duration;

use headcount_testkit::user_token;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

/// What an abuser met, for the test's summary.
pub(crate) type Log = mpsc::UnboundedSender<String>;

/// In a log line: a request the server neither answered nor refused in time. Bad input gets a
/// clear error; the server must not hang on it.
pub(crate) const HUNG: &str = "no answer within";

/// A raw WebSocket (serializer 2.0.0) opened with an authenticated token of user `sub`.
pub(crate) async fn connect(port: u16, sub: &str) -> io::Result<TcpStream> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!(
        "GET /realtime/v1/websocket?vsn=2.0.0&apikey={} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        user_token("authenticated", sub, 3600)
    );
    tcp.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        timeout(Duration::from_secs(5), tcp.read_exact(&mut byte))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no upgrade answer"))??;
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = String::from_utf8_lossy(&head[..head.len().min(40)]).into_owned();
        return Err(io::Error::other(format!("upgrade refused: {line}")));
    }
    Ok(tcp)
}

pub(crate) use headcount_testkit::raw::{client_frame as frame, client_header as header};

/// A 2.0.0 text message as one frame.
pub(crate) fn text(msg: &Value) -> Vec<u8> {
    frame(true, 1, msg.to_string().as_bytes())
}

/// Reads server frames until a close frame or the end; returns the close code (none: the
/// connection ended without one, or `wait` passed first, in which case `Err`).
pub(crate) async fn close_code(rd: &mut OwnedReadHalf, wait: Duration) -> Result<Option<u16>, ()> {
    let read = async {
        loop {
            match read_frame(rd).await {
                Ok((8, payload)) if payload.len() >= 2 => {
                    return Some(u16::from_be_bytes([payload[0], payload[1]]));
                }
                Ok((8, _)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    timeout(wait, read).await.map_err(|_| ())
}

/// One server frame: (opcode, payload).
pub(crate) async fn read_frame(rd: &mut OwnedReadHalf) -> io::Result<(u8, Vec<u8>)> {
    headcount_testkit::raw::read_server_frame(rd).await
}

/// Reads and drops everything the server sends until the connection ends; returns the close
/// code, if a close frame came.
async fn drain(mut rd: OwnedReadHalf) -> Option<u16> {
    close_code(&mut rd, Duration::from_secs(3600))
        .await
        .ok()
        .flatten()
}

/// Frames over `max_frame_size` (5 MB): a 6 MB text frame, `rounds` times. The server must
/// close each socket with 1009 without buffering the frame.
pub(crate) async fn oversized_frames(port: u16, rounds: usize, log: Log) {
    for round in 0..rounds {
        let Ok(tcp) = connect(port, "abuser-big-frames").await else {
            let _ = log.send(format!("oversized frame {round}: connect refused"));
            continue;
        };
        let (mut rd, mut wr) = tcp.into_split();
        let mut bytes = header(true, 1, 6_000_000);
        bytes.extend(std::iter::repeat_n(b' ', 256 * 1024));
        let _ = wr.write_all(&bytes).await;
        let code = close_code(&mut rd, Duration::from_secs(10)).await;
        let _ = log.send(format!("oversized frame {round}: close {code:?}"));
    }
}

/// One client flooding the node: joins at `joins_per_tick` and broadcasts at
/// `broadcasts_per_tick` every 100 ms on `topic` (a channel healthy members share), while
/// reading everything it gets, until `end`. Cut or refused, it comes back 100 ms later.
pub(crate) async fn flood(
    port: u16,
    topic: &str,
    joins_per_tick: usize,
    broadcasts_per_tick: usize,
    end: Instant,
    log: Log,
) {
    let (mut sockets, mut joins, mut sent) = (0, 0usize, 0usize);
    let mut closes = Vec::new();
    while Instant::now() < end {
        let Ok(tcp) = connect(port, "abuser-flood").await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        sockets += 1;
        let (rd, mut wr) = tcp.into_split();
        let reader = tokio::spawn(drain(rd));
        let mut tick = Instant::now();
        let mut n = 0u64;
        'socket: while Instant::now() < end && !reader.is_finished() {
            let mut burst = Vec::new();
            let jr = format!("j{n}");
            burst.extend(text(&json!([jr, jr, topic, "phx_join", {"config": {}}])));
            for k in 0..joins_per_tick {
                let t = format!("realtime:flood-{}", k % 50);
                burst.extend(text(
                    &json!([format!("f{n}-{k}"), null, t, "phx_join", {"config": {}}]),
                ));
            }
            for k in 0..broadcasts_per_tick {
                let msg = json!([jr, null, topic, "broadcast", {"type": "broadcast", "event": "flood", "payload": {"n": n, "k": k}}]);
                burst.extend(text(&msg));
            }
            if wr.write_all(&burst).await.is_err() {
                break 'socket;
            }
            joins += joins_per_tick + 1;
            sent += broadcasts_per_tick;
            n += 1;
            tick += Duration::from_millis(100);
            sleep_until(tick).await;
        }
        drop(wr);
        if let Ok(Ok(code)) = timeout(Duration::from_secs(5), reader).await {
            closes.push(code);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = log.send(format!(
        "flood: {sockets} sockets, {joins} joins and {sent} broadcasts sent; closes {closes:?}"
    ));
}

/// `count` sockets that each send the first `bytes` of a text message as an unfinished
/// fragment and then hold the socket open until `end`.
pub(crate) async fn unfinished_fragments(
    port: u16,
    count: usize,
    bytes: usize,
    end: Instant,
    log: Log,
) {
    let mut held = Vec::new();
    for n in 0..count {
        let Ok(tcp) = connect(port, &format!("abuser-fragments-{n}")).await else {
            let _ = log.send(format!("fragment socket {n}: connect refused"));
            continue;
        };
        let (rd, mut wr) = tcp.into_split();
        let mut msg = br#"[null,"1","phoenix","heartbeat",{"pad":""#.to_vec();
        msg.resize(bytes, b'x');
        let _ = wr.write_all(&frame(false, 1, &msg)).await;
        held.push((tokio::spawn(drain(rd)), wr));
    }
    sleep_until(end).await;
    let mut outcome = Vec::new();
    for (reader, wr) in held {
        outcome.push(if reader.is_finished() {
            format!("closed by the server ({:?})", reader.await.ok().flatten())
        } else {
            "still open".to_owned()
        });
        drop(wr);
    }
    let _ = log.send(format!(
        "unfinished fragments ({count} x {bytes} B): {outcome:?}"
    ));
}

/// Joins with topics of `len` bytes: a public one, and a private one that the policy's
/// `org:*:room:*:chat` rule must match against (the quadratic case of a backtracking matcher).
pub(crate) async fn huge_topics(port: u16, len: usize, log: Log) {
    let public = format!("realtime:{}", "t".repeat(len));
    let repeat = len / ":room:".len();
    let private = format!("realtime:org:{}x", ":room:".repeat(repeat));
    for (name, topic, private) in [("public", public, false), ("private", private, true)] {
        let Ok(tcp) = connect(port, "abuser-topics").await else {
            let _ = log.send(format!("huge {name} topic: connect refused"));
            continue;
        };
        let (mut rd, mut wr) = tcp.into_split();
        let token = user_token("authenticated", "abuser-topics", 3600);
        let join = json!(["1", "1", topic, "phx_join", {"config": {"private": private}, "access_token": token}]);
        let started = Instant::now();
        let _ = wr.write_all(&text(&join)).await;
        let answer = timeout(Duration::from_secs(8), read_frame(&mut rd)).await;
        let answer = match answer {
            Ok(Ok((_, payload))) => {
                let v: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                format!("{}", v[4])
            }
            Ok(Err(e)) => format!("connection ended: {e}"),
            Err(_) => format!("{HUNG} 8 s"),
        };
        let _ = log.send(format!(
            "huge {name} topic ({} B): {answer} after {:?}",
            topic.len(),
            started.elapsed()
        ));
    }
}

/// What [`huge_presences`] does.
pub(crate) struct Presences {
    /// A channel healthy members are in, joined with a huge key too.
    pub shared: &'static str,
    /// Channels joined with presence keys of `key_len` bytes, tracked in each.
    pub keyed: usize,
    /// The length of those keys.
    pub key_len: usize,
    /// Channels where payloads of `payload_len` bytes are tracked under a short key: each
    /// legal on its own, together more presence than one socket should hold.
    pub fat: usize,
    /// The length of those payloads.
    pub payload_len: usize,
}

/// One socket tracking huge presences as [`Presences`] says, until `end`.
pub(crate) async fn huge_presences(port: u16, p: Presences, end: Instant, log: Log) {
    let Ok(tcp) = connect(port, "abuser-presences").await else {
        let _ = log.send("huge presences: connect refused".to_owned());
        return;
    };
    let (rd, mut wr) = tcp.into_split();
    let reader = tokio::spawn(drain(rd));
    let keyed = std::iter::once(p.shared.to_owned())
        .chain((0..p.keyed).map(|n| format!("realtime:keys-{n}")))
        .map(|topic| (topic, p.key_len, 0));
    let fat = (0..p.fat).map(|n| (format!("realtime:fat-{n}"), 8, p.payload_len));
    for (n, (topic, key_len, payload_len)) in keyed.chain(fat).enumerate() {
        let key = format!("{n}-{}", "k".repeat(key_len));
        let jr = format!("k{n}");
        let config = json!({"presence": {"key": key, "enabled": true}});
        let join = json!([jr, jr, topic, "phx_join", { "config": config }]);
        let payload = json!({"abuser": true, "pad": "p".repeat(payload_len)});
        let track = json!({"type": "presence", "event": "track", "payload": payload});
        let track = json!([jr, format!("t{n}"), topic, "presence", track]);
        let mut bytes = text(&join);
        bytes.extend(text(&track));
        if wr.write_all(&bytes).await.is_err() {
            break;
        }
    }
    sleep_until(end).await;
    let outcome = if reader.is_finished() {
        format!("closed by the server ({:?})", reader.await.ok().flatten())
    } else {
        "still open".to_owned()
    };
    drop(wr);
    let _ = log.send(format!(
        "huge presences ({}+1 channels with {} B keys, {} with {} B payloads): {outcome}",
        p.keyed, p.key_len, p.fat, p.payload_len
    ));
}

/// A member of `topics` that never reads: the server must cut it as a slow consumer, and no
/// one else may notice.
pub(crate) async fn slow_consumer(port: u16, topics: &[&str], end: Instant, log: Log) {
    let Ok(tcp) = connect(port, "abuser-slow").await else {
        let _ = log.send("slow consumer: connect refused".to_owned());
        return;
    };
    let (mut rd, mut wr) = tcp.into_split();
    for (n, topic) in topics.iter().enumerate() {
        let jr = format!("s{n}");
        let _ = wr
            .write_all(&text(&json!([jr, jr, topic, "phx_join", {"config": {}}])))
            .await;
    }
    sleep_until(end).await;
    // Only now read, to see whether the server let go of it meanwhile.
    let code = close_code(&mut rd, Duration::from_secs(1)).await;
    let _ = log.send(format!("slow consumer: {code:?} (Err: still open)"));
}
