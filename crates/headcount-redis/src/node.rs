//! What the tasks of one node share: its identity, its mirror of the presences it owns, the
//! queue toward Redis, the channels it serves, the command connection and the health record.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use headcount_cluster::{ChannelKey, ClusterSink, MemberId, PresenceEntry};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, Pipeline, Value};
use tokio::sync::Notify;

use crate::RedisOptions;
use crate::keys::Layout;
use crate::scripts::Scripts;

/// One unit of work for the writer, in the order the hub made the changes.
#[derive(Debug)]
pub(crate) enum Work {
    /// Write the current mirror value of this member's entry (coalesced: queued once however
    /// often it changes before the writer gets to it).
    Presence(ChannelKey, MemberId),
    /// Publish this message on the channel's pub/sub channel.
    Publish(ChannelKey, Bytes),
}

/// The mutable state the trait methods and the tasks share. Owned by [`Inner::state`]'s mutex,
/// which is never held across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The entries this node owns: what it asserts in Redis (the local mirror).
    pub owned: HashMap<ChannelKey, HashMap<MemberId, PresenceEntry>>,
    /// Work for the writer, in order.
    pub queue: VecDeque<Work>,
    /// The members with a [`Work::Presence`] in `queue`.
    pub pending: HashSet<(ChannelKey, MemberId)>,
    /// How many [`Work::Publish`] are in `queue` (bounded by the options' `queue_bound`).
    pub queued_broadcasts: usize,
    /// The bytes of the [`Work::Publish`] in `queue`.
    pub queued_bytes: usize,
    /// The bytes of the broadcasts in the batch the writer is sending. They count against the
    /// options' `queue_bytes` with `queued_bytes` until the batch is done (answered or failed):
    /// the bound is on what the node holds, not only on what waits.
    pub sending_bytes: usize,
    /// Set when every owned entry must be written again (a new connection, a node that came
    /// back from the dead): the writer does it before the rest of the queue.
    pub reassert: bool,
    /// The channels this node serves, each with the generation of its latest `serve`.
    pub served: HashMap<ChannelKey, u64>,
    /// The next serve generation.
    pub next_generation: u64,
    /// The served channels the subscriber has in step, with the generation it synced.
    pub live: HashMap<ChannelKey, u64>,
    /// Whether the writer is sending a batch.
    pub writing: bool,
}

/// Counters, for tests and operators.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub broadcasts_dropped: AtomicU64,
    pub resyncs: AtomicU64,
    pub pubsub_connections: AtomicU64,
    pub reasserts: AtomicU64,
    pub nodes_reaped: AtomicU64,
    pub entries_reaped: AtomicU64,
}

/// What the node knows about its links to Redis.
#[derive(Debug)]
pub(crate) struct Links {
    /// The last command failure, if the last command failed.
    pub commands_error: Option<String>,
    /// The pub/sub connection's failure, if it is down.
    pub pubsub_error: Option<String>,
    /// The last time a command failed or was slow: the reaper waits until Redis has looked
    /// healthy for a whole heartbeat lifetime before it calls anyone dead.
    pub disturbed_at: Instant,
}

impl Links {
    /// Whether either link is failing.
    pub(crate) fn has_failure(&self) -> bool {
        self.commands_error.is_some() || self.pubsub_error.is_some()
    }
}

/// A failed Redis call, described for the health report.
#[derive(Debug, Clone)]
pub(crate) struct Failure(pub String);

/// The shared half of a [`crate::RedisCluster`].
pub(crate) struct Inner {
    /// This node's id: fresh for every process (and every `connect`).
    pub node: String,
    /// The options, checked.
    pub options: RedisOptions,
    /// How long the heartbeat key lives.
    pub heartbeat_ttl: Duration,
    /// How often the reaper looks for dead nodes.
    pub reap_interval: Duration,
    /// Key names.
    pub layout: Layout,
    /// The scripts.
    pub scripts: Scripts,
    /// Where connections come from.
    pub client: redis::Client,
    /// The command connection (pipelined, shared by the tasks), with its number.
    conn: tokio::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    next_conn: AtomicU64,
    /// The node's current epoch (see the heartbeat script).
    pub epoch: AtomicU64,
    /// See [`State`].
    pub state: Mutex<State>,
    /// Wakes the writer.
    pub writer_wake: Notify,
    /// Wakes the subscriber.
    pub subscriber_wake: Notify,
    /// Told by the watchdog when Redis answers again after failing: the writer and the
    /// subscriber then retry at once instead of finishing their backoff pause.
    pub writer_retry: Notify,
    /// See `writer_retry`.
    pub subscriber_retry: Notify,
    /// Set by the writer while it cannot reach Redis: broadcasts are then dropped at once.
    pub writer_down: AtomicBool,
    /// Set once the node stops (shutdown or crash): every trait method is then a no-op.
    pub stopped: AtomicBool,
    /// Set by a simulated crash: no call reaches Redis any more.
    pub crashed: AtomicBool,
    /// Where what the node hears goes.
    pub sink: OnceLock<Weak<dyn ClusterSink>>,
    /// See [`Links`].
    pub links: Mutex<Links>,
    /// See [`Counters`].
    pub counters: Counters,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("node", &self.node).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    /// A node that has not connected yet.
    pub(crate) fn new(
        client: redis::Client,
        options: RedisOptions,
        heartbeat_ttl: Duration,
        reap_interval: Duration,
    ) -> Inner {
        Inner {
            node: uuid::Uuid::new_v4().simple().to_string(),
            layout: Layout::new(&options.prefix),
            options,
            heartbeat_ttl,
            reap_interval,
            scripts: Scripts::new(),
            client,
            conn: tokio::sync::Mutex::new(None),
            next_conn: AtomicU64::new(1),
            epoch: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            writer_wake: Notify::new(),
            subscriber_wake: Notify::new(),
            writer_retry: Notify::new(),
            subscriber_retry: Notify::new(),
            writer_down: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            sink: OnceLock::new(),
            links: Mutex::new(Links {
                commands_error: None,
                pubsub_error: None,
                disturbed_at: Instant::now(),
            }),
            counters: Counters::default(),
        }
    }

    /// The shared state.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The health record.
    pub(crate) fn links(&self) -> MutexGuard<'_, Links> {
        lock(&self.links)
    }

    /// Whether the node has stopped.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The hub, while it lives.
    pub(crate) fn sink(&self) -> Option<Arc<dyn ClusterSink>> {
        self.sink.get().and_then(Weak::upgrade)
    }

    fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.call_timeout))
            .set_response_timeout(Some(self.options.call_timeout))
    }

    /// The command connection, connecting (and loading the scripts) if there is none.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), Failure> {
        let mut slot = self.conn.lock().await;
        if let Some((id, conn)) = &*slot {
            return Ok((*id, conn.clone()));
        }
        let timeout = self.options.call_timeout;
        let connect = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&self.connection_config())
                .await?;
            let mut load = redis::pipe();
            for src in Scripts::sources() {
                load.cmd("SCRIPT").arg("LOAD").arg(src);
            }
            load.query_async::<()>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        let conn = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(Failure(format!("cannot connect: {e}"))),
            Err(_) => return Err(Failure(format!("cannot connect within {timeout:?}"))),
        };
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        *slot = Some((id, conn.clone()));
        Ok((id, conn))
    }

    /// Forgets connection `id` (if it is still the current one) so the next call reconnects.
    async fn discard(&self, id: u64) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|(current, _)| *current == id) {
            *slot = None;
        }
    }

    /// Drops the command connection without waiting (a crash: nothing more is sent).
    pub(crate) fn drop_connection(&self) {
        if let Ok(mut slot) = self.conn.try_lock() {
            *slot = None;
        }
    }

    /// Runs `pipe` within the call timeout. Any failure (a timeout included) drops the
    /// connection and is recorded for the health report; so is a slow answer, for the reaper.
    /// Per-command errors come back as [`Value::ServerError`] when the pipeline ignores errors;
    /// a missing script among them counts as a failure (the next connection loads them again).
    pub(crate) async fn call<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, Failure> {
        if self.crashed.load(Ordering::Acquire) {
            return Err(Failure("crashed".into()));
        }
        let started = Instant::now();
        let (id, mut conn) = match self.connection().await {
            Ok(c) => c,
            Err(f) => {
                self.failed(&f);
                return Err(f);
            }
        };
        let timeout = self.options.call_timeout;
        let result = match tokio::time::timeout(timeout, pipe.query_async::<Value>(&mut conn)).await
        {
            Ok(Ok(value)) => {
                let noscript = matches!(&value, Value::Array(items) if items.iter().any(|v| matches!(
                    v,
                    Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript)
                )));
                if noscript {
                    Err(Failure("the scripts are gone (SCRIPT FLUSH?)".into()))
                } else {
                    T::from_redis_value(value)
                        .map_err(|e| Failure(format!("unexpected answer: {e}")))
                }
            }
            Ok(Err(e)) => Err(Failure(e.to_string())),
            Err(_) => Err(Failure(format!("no answer within {timeout:?}"))),
        };
        match &result {
            Ok(_) => {
                let mut links = self.links();
                links.commands_error = None;
                if started.elapsed() > self.options.heartbeat() / 2 {
                    links.disturbed_at = Instant::now();
                }
            }
            Err(f) => {
                self.discard(id).await;
                self.failed(f);
            }
        }
        result
    }

    /// Records that Redis did not answer the watchdog in time (the connection is kept: the
    /// calls in flight fail by their own timeout if Redis stays silent).
    pub(crate) fn unanswered(&self, f: &Failure) {
        self.failed(f);
    }

    fn failed(&self, f: &Failure) {
        let mut links = self.links();
        if links.commands_error.is_none() {
            tracing::warn!(node = %self.node, error = %f.0, "redis unreachable");
        }
        links.commands_error = Some(f.0.clone());
        links.disturbed_at = Instant::now();
    }

    /// Queues a write of member `member`'s entry in `key` (coalesced).
    pub(crate) fn queue_presence(
        &self,
        key: &ChannelKey,
        member: MemberId,
        entry: Option<&PresenceEntry>,
    ) {
        let mut st = self.state();
        match entry {
            Some(e) => {
                st.owned
                    .entry(key.clone())
                    .or_default()
                    .insert(member, e.clone());
            }
            None => {
                if let Some(members) = st.owned.get_mut(key) {
                    members.remove(&member);
                    if members.is_empty() {
                        st.owned.remove(key);
                    }
                }
            }
        }
        let pending = (key.clone(), member);
        if !st.pending.contains(&pending) {
            st.pending.insert(pending);
            st.queue.push_back(Work::Presence(key.clone(), member));
        }
        drop(st);
        self.writer_wake.notify_one();
    }

    /// Queues a broadcast, unless the writer is down or the queue is full: `queue_bound`
    /// broadcasts, or `queue_bytes` bytes with the batch being sent. What does not fit is
    /// dropped and counted, as while Redis is unreachable: broadcasts are relayed at most once,
    /// and never late.
    pub(crate) fn queue_publish(&self, key: &ChannelKey, message: Bytes) {
        if self.writer_down.load(Ordering::Acquire) {
            self.counters
                .broadcasts_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut st = self.state();
        let held = st.queued_bytes + st.sending_bytes;
        if st.queued_broadcasts >= self.options.queue_bound
            || held + message.len() > self.options.queue_bytes
        {
            drop(st);
            let n = self
                .counters
                .broadcasts_dropped
                .fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(node = %self.node, dropped = n + 1, "the queue toward redis is full: broadcasts dropped");
            }
            return;
        }
        st.queued_broadcasts += 1;
        st.queued_bytes += message.len();
        st.queue.push_back(Work::Publish(key.clone(), message));
        drop(st);
        self.writer_wake.notify_one();
    }

    /// Asks the writer to write every owned entry again.
    pub(crate) fn request_reassert(&self) {
        self.state().reassert = true;
        self.writer_wake.notify_one();
    }
}
