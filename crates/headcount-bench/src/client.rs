//! One client connection of any protocol: a [`WsConn`], a protocol [`Session`] and an
//! [`Outbox`], driven by the scenario task that owns it.
//!
//! [`Client::establish`] connects, waits for the protocol's handshake, joins and (for members
//! that track) waits for the presence to be accepted, handing every other event to the caller
//! (a storm's view sees the `presence_state` that comes with the join). Afterwards the scenario
//! calls [`Client::read`] (cancel-safe, for `select!`) and [`Client::process`].

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::proto::{Event, Incoming, Member, Protocol, Session};
use crate::ws::{Endpoint, Message, OP_PONG, Outbox, WsConn};

/// One server (one node of a cluster) clients connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The server's address.
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
}

/// Where the clients of a run connect, and with which protocol.
#[derive(Debug)]
pub struct Target<P> {
    /// The protocol adapter.
    pub proto: P,
    /// The servers, in the order of `--url`: one, or the nodes of a cluster. Clients connect
    /// to the first unless a scenario spreads them ([`Client::establish_on`]).
    pub nodes: Vec<Node>,
    /// Source addresses to spread connections over (empty: the kernel picks).
    pub sources: Vec<IpAddr>,
    next_source: AtomicUsize,
}

impl<P: Protocol> Target<P> {
    /// A target of one or more servers (at least one); with `sources > 1` and loopback IPv4
    /// servers, connections come from `127.0.0.1 ..= 127.0.0.N` in turn, so that more sockets
    /// than one address has ephemeral ports can be open at once.
    pub fn new(proto: P, nodes: Vec<Node>, sources: u8) -> Target<P> {
        assert!(!nodes.is_empty(), "a target has at least one server");
        let local = nodes
            .iter()
            .all(|n| n.addr.ip().is_loopback() && n.addr.is_ipv4());
        let sources = if sources > 1 && local {
            (1..=sources)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
                .collect()
        } else {
            Vec::new()
        };
        Target {
            proto,
            nodes,
            sources,
            next_source: AtomicUsize::new(0),
        }
    }

    /// The first server's address.
    pub fn addr(&self) -> SocketAddr {
        self.nodes[0].addr
    }

    fn endpoint(&self, node: usize, member: &Member) -> Endpoint {
        let (path, subprotocol) = self.proto.path(member);
        let node = &self.nodes[node % self.nodes.len()];
        Endpoint {
            addr: node.addr,
            host: node.host.clone(),
            path,
            subprotocol,
        }
    }

    fn source(&self) -> Option<IpAddr> {
        if self.sources.is_empty() {
            return None;
        }
        let i = self.next_source.fetch_add(1, Ordering::Relaxed);
        Some(self.sources[i % self.sources.len()])
    }
}

/// Why a client failed.
#[derive(Debug)]
pub enum ClientError {
    /// TCP connect or the HTTP upgrade failed.
    Connect(io::Error),
    /// The socket failed or closed.
    Io(io::Error),
    /// The server closed the WebSocket.
    Closed,
    /// The server sent something the session could not read.
    Protocol(String),
    /// The server refused the join or the presence, or closed the channel.
    Refused(String),
    /// Nothing came in time.
    Timeout,
}

impl ClientError {
    /// A short category for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect(_) => "connect",
            ClientError::Io(_) => "io",
            ClientError::Closed => "closed",
            ClientError::Protocol(_) => "protocol",
            ClientError::Refused(_) => "refused",
            ClientError::Timeout => "timeout",
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::Io(e) => write!(f, "socket: {e}"),
            ClientError::Closed => f.write_str("closed by the server"),
            ClientError::Protocol(e) => write!(f, "protocol: {e}"),
            ClientError::Refused(e) => write!(f, "refused: {e}"),
            ClientError::Timeout => f.write_str("timed out"),
        }
    }
}

impl std::error::Error for ClientError {}

/// The milestones of [`Client::establish`].
#[derive(Debug, Default)]
struct Seen {
    ready: bool,
    joined: bool,
    tracked: bool,
}

impl Seen {
    fn note(&mut self, e: Event<'_>, on: &mut (dyn FnMut(Event<'_>) + Send)) {
        match e {
            Event::Ready => self.ready = true,
            Event::Joined => self.joined = true,
            Event::Tracked => self.tracked = true,
            other => on(other),
        }
    }
}

/// One connected client.
#[derive(Debug)]
pub struct Client<S> {
    /// The socket.
    pub ws: WsConn,
    /// The protocol state.
    pub session: S,
    /// Frames waiting to be written.
    pub out: Outbox,
}

impl<S: Session> Client<S> {
    /// Connects `member`, completes the protocol handshake, joins, and waits for the join (and
    /// the presence, when the member tracks) to be accepted. Other events go to `on`.
    pub async fn establish<P: Protocol<Session = S>>(
        target: &Target<P>,
        member: &Member,
        on: &mut (dyn FnMut(Event<'_>) + Send),
    ) -> Result<Client<S>, ClientError> {
        Client::establish_on(target, 0, member, on).await
    }

    /// [`Client::establish`] on the target's server number `node` (modulo their number).
    pub async fn establish_on<P: Protocol<Session = S>>(
        target: &Target<P>,
        node: usize,
        member: &Member,
        on: &mut (dyn FnMut(Event<'_>) + Send),
    ) -> Result<Client<S>, ClientError> {
        let ws = WsConn::connect(&target.endpoint(node, member), target.source())
            .await
            .map_err(ClientError::Connect)?;
        let mut client = Client {
            ws,
            session: target.proto.session(member),
            out: Outbox::new(u64::from(member.id) + 1),
        };
        // Events can come early (a server's first message with the upgrade response, a
        // join reply in the same read as the handshake's last message), so one set of flags
        // follows the whole sequence.
        let mut seen = Seen::default();
        client
            .session
            .open(&mut client.out, &mut |e| seen.note(e, on));
        client.process(&mut |e| seen.note(e, on))?;
        client.flush().await?;
        while !seen.ready {
            client.pump(&mut |e| seen.note(e, on)).await?;
        }
        client.session.join(&mut client.out);
        client.flush().await?;
        while !(seen.joined && (seen.tracked || !member.track)) {
            client.pump(&mut |e| seen.note(e, on)).await?;
        }
        Ok(client)
    }

    /// Waits for bytes from the server. Cancel-safe; follow with [`Client::process`].
    pub async fn read(&mut self) -> Result<(), ClientError> {
        match self.ws.read_more().await {
            Ok(0) => Err(ClientError::Closed),
            Ok(_) => Ok(()),
            Err(e) => Err(ClientError::Io(e)),
        }
    }

    /// Handles every complete message received so far. A refusal is returned as an error.
    pub fn process(&mut self, on: &mut dyn FnMut(Event<'_>)) -> Result<(), ClientError> {
        let mut refused = None;
        loop {
            let msg = match self.ws.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            };
            let incoming = match msg {
                Message::Text(t) => Incoming::Text(t),
                Message::Binary(b) => Incoming::Binary(b),
                Message::Ping(p) => {
                    self.out.control(OP_PONG, p);
                    continue;
                }
                Message::Pong => continue,
                Message::Close(_) => return Err(ClientError::Closed),
            };
            self.session
                .handle(incoming, &mut self.out, &mut |e| match e {
                    Event::Refused(r) => refused = Some(r),
                    other => on(other),
                })
                .map_err(|e| ClientError::Protocol(e.0))?;
            if let Some(r) = refused.take() {
                return Err(ClientError::Refused(r));
            }
        }
        Ok(())
    }

    /// Reads once, handles what came, and writes any answers.
    pub async fn pump(
        &mut self,
        on: &mut (dyn FnMut(Event<'_>) + Send),
    ) -> Result<(), ClientError> {
        self.read().await?;
        self.process(on)?;
        self.flush().await
    }

    /// Writes what the session queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.ws.flush(&mut self.out).await.map_err(ClientError::Io)
    }

    /// Closes the WebSocket (best effort).
    pub async fn close(mut self) {
        self.ws.close(&mut self.out).await;
    }
}
