//! The headcount service: a presence and broadcast server that speaks the Supabase Realtime
//! protocol, so `@supabase/supabase-js`, `@supabase/realtime-js` and phoenix.js work against it
//! unchanged.
//!
//! The path of a message:
//!
//! ```text
//! socket ─read→ ws::WsReader ─→ session::Session ─→ hub::Channel (topic)
//!                                                   ├→ presence state ─→ diff
//!                                                   └→ broadcast
//! fan-out: each frame encoded once per serializer, shared as Bytes
//!        ─→ each member's conn::Conn outbox (bounded) ─→ writer task (one vectored write)
//! ```
//!
//! Modules:
//! * [`config`]: [`Config`] and its defaults;
//! * [`auth`]: JWT verification with Supabase's rules and messages;
//! * [`ws`]: the WebSocket layer (frames, messages, handshake);
//! * [`conn`]: the shared half of a socket, with its bounded outbox;
//! * [`hub`]: the channel registry, the node's connections, the cluster sink;
//! * [`channel`]: one channel's members, presence (with diff coalescing) and fan-out;
//! * [`session`]: one socket's protocol state machine (no I/O, no clock);
//! * [`driver`]: the reader and writer tasks around a session;
//! * [`http`]: routes, the upgrade, and HTTP connection serving;
//! * [`api`]: broadcast over HTTP (Supabase's REST endpoints);
//! * [`admin`]: the service_role admin API and the page at `/admin`;
//! * [`cluster`]: sharing presence and broadcast between nodes;
//! * [`metrics`]: counters for `/metrics`; [`limits`]: rate windows; [`policy`]: private channels;
//! * [`demo`]: the demo page at `/`, built from `web/` and embedded.
//!
//! [`run`] serves on a listener that is already bound until a shutdown future completes.

pub mod admin;
pub mod api;
pub mod auth;
pub mod channel;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod demo;
pub mod driver;
pub mod frames;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod reasons;
pub mod session;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

pub use config::Config;

/// Locks `m`, going on through a poisoned lock: every critical section in the server leaves
/// its state whole before anything that can panic, so a panic elsewhere must not take the
/// node's shared state down with it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
pub use hub::Hub;

/// Serves `listener` until `shutdown` completes, then closes every socket with "going away"
/// (so clients reconnect elsewhere), removes their presences, and waits up to
/// [`Config::shutdown_grace`] for them to finish.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let hub = Arc::new(Hub::new(config));
    serve(listener, hub, shutdown).await
}

/// Like [`run`], with a hub the caller keeps (to inspect channels, for example).
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let sweeper = tokio::spawn(sweep_loop(hub.clone()));
    let flusher = tokio::spawn(flush_loop(hub.clone()));
    let app = http::router(hub.clone());
    let header_timeout = hub.config.header_read_timeout;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(http::serve_connection(stream, peer, app.clone(), header_timeout, stop_rx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    hub.draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    drop(listener);
    let _ = stop_tx.send(true);
    let conns = hub.conns();
    info!(connections = conns.len(), "shutting down");
    for conn in conns {
        conn.close(
            ws::close_code::GOING_AWAY,
            reasons::Close::ShuttingDown.as_str(),
        );
    }
    let deadline = tokio::time::Instant::now() + hub.config.shutdown_grace;
    while hub.conn_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Remove this node's presences everywhere at once (the sockets' own leaves may not all
    // have gone out yet), without waiting long for a backend that is down.
    let _ = tokio::time::timeout(Duration::from_secs(2), hub.cluster.shutdown()).await;
    sweeper.abort();
    flusher.abort();
    Ok(())
}

async fn flush_loop(hub: Arc<Hub>) {
    if hub.coalescing.window.is_zero() {
        return;
    }
    let period = (hub.coalescing.window / 4).max(Duration::from_millis(2));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        hub.flush_presence();
    }
}

async fn sweep_loop(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(hub.config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        hub.sweep(hub.clock.ms());
    }
}
