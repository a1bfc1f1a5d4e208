//! The cluster conformance suite against the in-memory backend (several nodes in one process).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use headcount_server::cluster::Cluster;
use headcount_server::cluster::memory::MemoryBus;
use headcount_testkit::TestServer;
use headcount_testkit::cluster_suite::{self as suite, Backend};

struct Memory(MemoryBus);

impl Backend for Memory {
    fn node(&self) -> Arc<dyn Cluster> {
        self.0.node()
    }

    fn crash<'a>(&'a self, node: TestServer) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            self.0.kill(node.hub.cluster.node_id());
            drop(node);
        })
    }

    fn ghost_timeout(&self) -> Duration {
        Duration::from_millis(100)
    }
}

fn memory() -> Memory {
    Memory(MemoryBus::new())
}

#[tokio::test]
async fn presence_crosses_nodes() {
    suite::presence_crosses_nodes(&memory()).await;
}

#[tokio::test]
async fn updates_and_untracks_cross_nodes() {
    suite::updates_and_untracks_cross_nodes(&memory()).await;
}

#[tokio::test]
async fn disconnects_leave_everywhere() {
    suite::disconnects_leave_everywhere(&memory()).await;
}

#[tokio::test]
async fn broadcast_crosses_nodes() {
    suite::broadcast_crosses_nodes(&memory()).await;
}

#[tokio::test]
async fn server_broadcasts_reach_other_nodes() {
    suite::server_broadcasts_reach_other_nodes(&memory()).await;
}

#[tokio::test]
async fn clean_stop_removes_presences() {
    suite::clean_stop_removes_presences(&memory()).await;
}

#[tokio::test]
async fn crash_removes_presences() {
    let took = suite::crash_removes_presences(&memory()).await;
    println!("memory bus: a crashed node's last ghost left after {took:?}");
}
