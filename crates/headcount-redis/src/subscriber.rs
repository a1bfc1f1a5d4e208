//! The subscriber: one pub/sub connection, subscribed to exactly the channels the node serves.
//!
//! For each served channel it keeps the last sequence number it applied. A newly served channel
//! (or one whose pub/sub connection was replaced, or whose sequence shows a gap) is
//! resynchronised: subscribe first, then read the presence hash and the sequence number
//! atomically (the SNAPSHOT script, on the command connection), hand the hub every entry another
//! node owns with `remote_reset`, then replay what arrived meanwhile, skipping changes the
//! snapshot already holds. Messages that arrive while a snapshot is pending are buffered, so a
//! channel's changes and broadcasts reach the hub in the order they were published.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use headcount_cluster::{ChannelKey, PresenceEntry};
use redis::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::node::{Failure, Inner};
use crate::sync::{ChannelSync, Delivery, Step};
use crate::wire::{self, Message};
/// Snapshots read in one pipeline.
const SNAPSHOT_BATCH: usize = 64;
/// The pause before a failed snapshot is tried again.
const RETRY: Duration = Duration::from_millis(200);

struct Chan {
    generation: u64,
    subscribed: bool,
    sync: ChannelSync,
}

type Snapshot = Result<(u64, Vec<(String, PresenceEntry)>), Failure>;

struct Loaded {
    key: ChannelKey,
    ticket: u64,
    result: Snapshot,
}

struct Subscriber {
    inner: Arc<Inner>,
    chans: HashMap<ChannelKey, Chan>,
    next_ticket: u64,
    loaded_tx: mpsc::UnboundedSender<Loaded>,
    /// The served set changed since the last reconcile.
    dirty: bool,
    /// Some channel may need a subscription or a snapshot.
    todo: bool,
    /// When the earliest failed snapshot is due again.
    retry: Option<Instant>,
    /// Whether the pub/sub connection was reported down (and not back yet).
    down: bool,
}

/// Runs the subscriber until the node stops.
pub(crate) async fn run(inner: Arc<Inner>) {
    let (loaded_tx, mut loaded_rx) = mpsc::unbounded_channel();
    let mut sub = Subscriber {
        inner: inner.clone(),
        chans: HashMap::new(),
        next_ticket: 1,
        loaded_tx,
        dirty: true,
        todo: true,
        retry: None,
        down: false,
    };
    let mut pause = Duration::from_millis(50);
    loop {
        if inner.is_stopped() {
            return;
        }
        let timeout = inner.options.call_timeout;
        let pubsub = match tokio::time::timeout(timeout, inner.client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                sub.down(format!("pub/sub: cannot connect: {e}"));
                backoff(&inner, &mut pause).await;
                continue;
            }
            Err(_) => {
                sub.down(format!("pub/sub: cannot connect within {timeout:?}"));
                backoff(&inner, &mut pause).await;
                continue;
            }
        };
        pause = Duration::from_millis(50);
        inner
            .counters
            .pubsub_connections
            .fetch_add(1, Ordering::Relaxed);
        // Whatever was published while we were away is lost: every channel starts over.
        inner.state().live.clear();
        for chan in sub.chans.values_mut() {
            chan.subscribed = false;
            chan.sync.reset();
        }
        sub.dirty = true;
        sub.todo = true;
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(inner.options.heartbeat());
        ping.tick().await;
        let reason = loop {
            if let Err(f) = sub.reconcile(&mut sink).await {
                break f.0;
            }
            if sub.down {
                sub.down = false;
                inner.links().pubsub_error = None;
                tracing::info!(node = %inner.node, "redis pub/sub back");
            }
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => sub.on_message(msg.get_channel_name(), msg.get_payload_bytes()),
                    None => break "pub/sub connection lost".to_owned(),
                },
                Some(loaded) = loaded_rx.recv() => sub.on_loaded(loaded),
                () = inner.subscriber_wake.notified() => sub.dirty = true,
                () = sleep_until(sub.retry) => {
                    sub.retry = None;
                    sub.todo = true;
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(timeout, sink.ping::<Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break format!("pub/sub ping failed: {e}"),
                        Err(_) => break format!("pub/sub ping: no answer within {timeout:?}"),
                    }
                }
            }
            if inner.is_stopped() {
                return;
            }
        };
        sub.down(reason);
    }
}

/// Waits `pause` (doubling it, up to 1 s) or until the watchdog hears Redis answer again.
async fn backoff(inner: &Inner, pause: &mut Duration) {
    tokio::select! {
        () = tokio::time::sleep(*pause) => {}
        () = inner.subscriber_retry.notified() => {}
    }
    *pause = (*pause * 2).min(Duration::from_secs(1));
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Subscriber {
    fn down(&mut self, reason: String) {
        self.down = true;
        let mut links = self.inner.links();
        if links.pubsub_error.is_none() {
            tracing::warn!(node = %self.inner.node, error = %reason, "redis pub/sub lost");
        }
        links.pubsub_error = Some(reason);
    }

    /// Brings subscriptions in line with the served set and starts the snapshots that are due.
    async fn reconcile(&mut self, sink: &mut redis::aio::PubSubSink) -> Result<(), Failure> {
        let timeout = self.inner.options.call_timeout;
        if self.dirty {
            self.dirty = false;
            self.todo = true;
            let served = self.inner.state().served.clone();
            let gone: Vec<ChannelKey> = self
                .chans
                .keys()
                .filter(|k| !served.contains_key(*k))
                .cloned()
                .collect();
            let mut unsubscribe = Vec::new();
            for key in gone {
                self.inner.state().live.remove(&key);
                if let Some(chan) = self.chans.remove(&key)
                    && chan.subscribed
                {
                    unsubscribe.push(self.inner.layout.channel(&key).events);
                }
            }
            for (key, generation) in served {
                let chan = self.chans.entry(key.clone()).or_insert_with(|| Chan {
                    generation: 0,
                    subscribed: false,
                    sync: ChannelSync::stale(),
                });
                if chan.generation != generation {
                    // A new serve: the hub's channel starts empty and needs a reset.
                    self.inner.state().live.remove(&key);
                    chan.generation = generation;
                    chan.sync.reset();
                }
            }
            if !unsubscribe.is_empty() {
                match tokio::time::timeout(timeout, sink.unsubscribe(&unsubscribe)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(Failure(format!("pub/sub: unsubscribe: {e}"))),
                    Err(_) => return Err(Failure("pub/sub: unsubscribe timed out".into())),
                }
            }
        }
        if !self.todo {
            return Ok(());
        }
        let subscribe: Vec<ChannelKey> = self
            .chans
            .iter()
            .filter(|(_, c)| !c.subscribed)
            .map(|(k, _)| k.clone())
            .collect();
        for chunk in subscribe.chunks(256) {
            let names: Vec<String> = chunk
                .iter()
                .map(|k| self.inner.layout.channel(k).events)
                .collect();
            match tokio::time::timeout(timeout, sink.subscribe(&names)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Failure(format!("pub/sub: subscribe: {e}"))),
                Err(_) => return Err(Failure("pub/sub: subscribe timed out".into())),
            }
            for key in chunk {
                if let Some(chan) = self.chans.get_mut(key) {
                    chan.subscribed = true;
                }
            }
        }
        self.start_snapshots();
        self.todo = false;
        Ok(())
    }

    /// Starts reading the snapshot of every subscribed channel that needs one and is due.
    fn start_snapshots(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        for (key, chan) in self.chans.iter_mut() {
            if !chan.subscribed {
                continue;
            }
            match chan.sync.snapshot_due(now) {
                Ok(false) => {}
                Err(at) => self.retry = Some(self.retry.map_or(at, |r| r.min(at))),
                Ok(true) => {
                    let ticket = self.next_ticket;
                    self.next_ticket += 1;
                    chan.sync.fetching(ticket);
                    due.push((key.clone(), ticket));
                }
            }
        }
        for batch in due.chunks(SNAPSHOT_BATCH) {
            let batch = batch.to_vec();
            let inner = self.inner.clone();
            let tx = self.loaded_tx.clone();
            tokio::spawn(async move {
                let results = load(&inner, &batch).await;
                for ((key, ticket), result) in batch.into_iter().zip(results) {
                    let _ = tx.send(Loaded {
                        key,
                        ticket,
                        result,
                    });
                }
            });
        }
    }

    fn on_message(&mut self, events: &str, payload: &[u8]) {
        let Some(key) = self.inner.layout.channel_of_events(events) else {
            return;
        };
        let Some(chan) = self.chans.get_mut(&key) else {
            return; // no longer served
        };
        let msg = match wire::parse_message(payload, &self.inner.node) {
            Some(Message::OwnBroadcast) => return,
            Some(msg) => msg,
            None => {
                tracing::warn!(node = %self.inner.node, channel = %events, "unreadable message ignored");
                return;
            }
        };
        let step = chan.sync.message(msg);
        self.perform(&key, step);
    }

    fn on_loaded(&mut self, loaded: Loaded) {
        let Some(chan) = self.chans.get_mut(&loaded.key) else {
            return;
        };
        let (seq, entries) = match loaded.result {
            Ok(snapshot) => snapshot,
            Err(_) => {
                let at = Instant::now() + RETRY;
                if chan.sync.failed(loaded.ticket, at) {
                    self.retry = Some(self.retry.map_or(at, |r| r.min(at)));
                }
                return;
            }
        };
        let Some(step) = chan.sync.loaded(loaded.ticket, seq) else {
            return; // superseded
        };
        if let Some(sink) = self.inner.sink() {
            sink.remote_reset(&loaded.key, entries);
        }
        let live = chan.sync.is_live().then_some(chan.generation);
        self.perform(&loaded.key, step);
        if let Some(generation) = live {
            self.inner.state().live.insert(loaded.key, generation);
        }
    }

    /// Tells the hub what `step` delivers, and notes a resync.
    fn perform(&mut self, key: &ChannelKey, step: Step) {
        if let Some(sink) = self.inner.sink() {
            for delivery in step.deliver {
                match delivery {
                    Delivery::Presence { owner, entry } => sink.remote_presence(key, &owner, entry),
                    Delivery::Broadcast(msg) => sink.remote_broadcast(key, &msg),
                }
            }
        }
        if step.resync {
            self.inner.counters.resyncs.fetch_add(1, Ordering::Relaxed);
            self.inner.state().live.remove(key);
            self.todo = true;
        }
    }
}

/// Reads the snapshots of `batch` in one pipeline.
async fn load(inner: &Inner, batch: &[(ChannelKey, u64)]) -> Vec<Snapshot> {
    let mut pipe = redis::pipe();
    for (key, _) in batch {
        let keys = inner.layout.channel(key);
        pipe.cmd("EVALSHA")
            .arg(inner.scripts.snapshot.get_hash())
            .arg(2)
            .arg(&keys.presence)
            .arg(&keys.seq);
    }
    match inner.call::<Vec<Value>>(&pipe).await {
        Ok(values) => values
            .into_iter()
            .map(|v| parse_snapshot(inner, v))
            .collect(),
        Err(f) => batch.iter().map(|_| Err(f.clone())).collect(),
    }
}

fn parse_snapshot(inner: &Inner, value: Value) -> Snapshot {
    let Value::Array(items) = value else {
        return Err(Failure(format!("unexpected snapshot: {value:?}")));
    };
    let mut items = items.into_iter();
    let seq = match items.next() {
        Some(Value::Int(n)) if n >= 0 => n as u64,
        other => return Err(Failure(format!("unexpected snapshot sequence: {other:?}"))),
    };
    let mut entries = Vec::new();
    while let (Some(owner), Some(json)) = (items.next(), items.next()) {
        let (Value::BulkString(owner), Value::BulkString(json)) = (owner, json) else {
            continue;
        };
        let Ok(owner) = String::from_utf8(owner) else {
            continue;
        };
        match wire::parse_entry(&json) {
            Some(stored) if stored.node != inner.node => entries.push((owner, stored.entry)),
            Some(_) => {}
            None => tracing::warn!(node = %inner.node, %owner, "unreadable entry skipped"),
        }
    }
    Ok((seq, entries))
}
