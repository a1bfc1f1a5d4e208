//! Several nodes in one process, sharing presence and broadcast through an in-memory bus.
//!
//! This is the reference implementation of [`Cluster`]: the conformance suite runs against it
//! and against Redis. Deliveries go through one queue per node, drained by a task, so no node
//! ever takes another node's locks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::mpsc;

use crate::{
    Broadcast, ChannelKey, Cluster, ClusterSink, Health, MemberId, PresenceEntry, RelayedBroadcast,
    owner_id,
};

enum Event {
    Broadcast(ChannelKey, RelayedBroadcast),
    Presence(ChannelKey, String, Option<PresenceEntry>),
    Reset(ChannelKey, Vec<(String, PresenceEntry)>),
}

#[derive(Default)]
struct BusState {
    /// node id → its delivery queue (absent once the node is gone).
    nodes: HashMap<String, mpsc::UnboundedSender<Event>>,
    /// channel → the nodes serving it.
    serving: HashMap<ChannelKey, HashSet<String>>,
    /// channel → owner → (owning node, entry): the authoritative presence, like Redis's hashes.
    presence: HashMap<ChannelKey, HashMap<String, (String, PresenceEntry)>>,
}

impl BusState {
    fn send_to_others(&self, key: &ChannelKey, from: &str, make: impl Fn() -> Event) {
        if let Some(nodes) = self.serving.get(key) {
            for node in nodes.iter().filter(|n| n.as_str() != from) {
                if let Some(tx) = self.nodes.get(node) {
                    let _ = tx.send(make());
                }
            }
        }
    }

    /// Removes every presence `node` owns, telling the nodes that serve those channels.
    fn remove_node(&mut self, node: &str) {
        let mut gone: Vec<(ChannelKey, String)> = Vec::new();
        for (key, owners) in &mut self.presence {
            owners.retain(|owner, (owning, _)| {
                let keep = owning != node;
                if !keep {
                    gone.push((key.clone(), owner.clone()));
                }
                keep
            });
        }
        for (key, owner) in gone {
            self.send_to_others(&key, node, || {
                Event::Presence(key.clone(), owner.clone(), None)
            });
        }
        for nodes in self.serving.values_mut() {
            nodes.remove(node);
        }
        self.nodes.remove(node);
    }
}

/// The bus that connects [`MemoryNode`]s.
#[derive(Clone, Default)]
pub struct MemoryBus {
    state: Arc<Mutex<BusState>>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryBus")
    }
}

fn lock(m: &Mutex<BusState>) -> MutexGuard<'_, BusState> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> MemoryBus {
        MemoryBus::default()
    }

    /// A new node on this bus.
    pub fn node(&self) -> Arc<MemoryNode> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.state).nodes.insert(id.clone(), tx);
        Arc::new(MemoryNode {
            id,
            bus: self.state.clone(),
            rx: Mutex::new(Some(rx)),
        })
    }

    /// Simulates a crash of `node`: it hears nothing more, and its presences are removed for
    /// everyone else, as a real backend does once the node's heartbeat expires.
    pub fn kill(&self, node: &str) {
        lock(&self.state).remove_node(node);
    }
}

/// One node's handle on a [`MemoryBus`].
pub struct MemoryNode {
    id: String,
    bus: Arc<Mutex<BusState>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
}

impl std::fmt::Debug for MemoryNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNode").field("id", &self.id).finish()
    }
}

impl Cluster for MemoryNode {
    fn node_id(&self) -> &str {
        &self.id
    }

    fn is_distributed(&self) -> bool {
        true
    }

    fn attach(&self, sink: Weak<dyn ClusterSink>) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let Some(sink) = sink.upgrade() else { return };
                match event {
                    Event::Broadcast(key, msg) => sink.remote_broadcast(&key, &msg),
                    Event::Presence(key, owner, entry) => sink.remote_presence(&key, &owner, entry),
                    Event::Reset(key, entries) => sink.remote_reset(&key, entries),
                }
            }
        });
    }

    fn serve(&self, key: &ChannelKey) {
        let mut bus = lock(&self.bus);
        if !bus.nodes.contains_key(&self.id) {
            return;
        }
        bus.serving
            .entry(key.clone())
            .or_default()
            .insert(self.id.clone());
        let entries: Vec<(String, PresenceEntry)> = bus
            .presence
            .get(key)
            .map(|owners| {
                owners
                    .iter()
                    .filter(|(_, (node, _))| *node != self.id)
                    .map(|(owner, (_, entry))| (owner.clone(), entry.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(tx) = bus.nodes.get(&self.id) {
            let _ = tx.send(Event::Reset(key.clone(), entries));
        }
    }

    fn unserve(&self, key: &ChannelKey) {
        let mut bus = lock(&self.bus);
        if let Some(nodes) = bus.serving.get_mut(key) {
            nodes.remove(&self.id);
            if nodes.is_empty() {
                bus.serving.remove(key);
            }
        }
    }

    fn publish(&self, key: &ChannelKey, msg: &Broadcast<'_>) {
        let msg = RelayedBroadcast::from_broadcast(msg);
        lock(&self.bus)
            .send_to_others(key, &self.id, || Event::Broadcast(key.clone(), msg.clone()));
    }

    fn presence(&self, key: &ChannelKey, member: MemberId, entry: Option<&PresenceEntry>) {
        let owner = owner_id(&self.id, member);
        let mut bus = lock(&self.bus);
        if !bus.nodes.contains_key(&self.id) {
            return;
        }
        let table = bus.presence.entry(key.clone()).or_default();
        match entry {
            Some(e) => {
                table.insert(owner.clone(), (self.id.clone(), e.clone()));
            }
            None => {
                table.remove(&owner);
            }
        }
        let entry = entry.cloned();
        bus.send_to_others(key, &self.id, || {
            Event::Presence(key.clone(), owner.clone(), entry.clone())
        });
    }

    fn health(&self) -> Health {
        let connected = lock(&self.bus).nodes.contains_key(&self.id);
        Health {
            connected,
            detail: if connected {
                "memory bus".into()
            } else {
                "removed from the bus".into()
            },
        }
    }

    fn shutdown(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        lock(&self.bus).remove_node(&self.id);
        Box::pin(async {})
    }
}
