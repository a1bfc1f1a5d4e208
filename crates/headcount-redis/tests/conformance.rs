//! The cluster conformance suite against Redis: every scenario with its own `redis-server` and
//! key prefix, nodes in this process.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use headcount_cluster::Cluster;
use headcount_redis::{RedisCluster, RedisOptions};
use headcount_testkit::TestServer;
use headcount_testkit::cluster_suite::{self as suite, Backend};
use headcount_testkit::redis::{RedisServer, unique_prefix};

/// The node timeout of these tests (the default is 10 s).
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

struct Redis {
    server: RedisServer,
    options: RedisOptions,
    nodes: Mutex<HashMap<String, Arc<RedisCluster>>>,
    handle: tokio::runtime::Handle,
}

impl Redis {
    fn new(name: &str) -> Redis {
        Redis {
            server: RedisServer::start(),
            options: RedisOptions::default()
                .with_prefix(unique_prefix(name))
                .with_node_timeout(NODE_TIMEOUT),
            nodes: Mutex::default(),
            handle: tokio::runtime::Handle::current(),
        }
    }
}

impl Backend for Redis {
    fn node(&self) -> Arc<dyn Cluster> {
        let url = self.server.url();
        let options = self.options.clone();
        // `Backend::node` is synchronous: block this worker while the others connect.
        let node = tokio::task::block_in_place(|| {
            self.handle
                .block_on(RedisCluster::connect(&url, options))
                .expect("connect to redis")
        });
        self.nodes
            .lock()
            .unwrap()
            .insert(node.stats().node, node.clone());
        node
    }

    fn crash<'a>(&'a self, node: TestServer) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let id = node.hub.cluster.node_id().to_owned();
            let cluster = self
                .nodes
                .lock()
                .unwrap()
                .remove(&id)
                .expect("a node of ours");
            cluster.crash();
            drop(node);
        })
    }

    fn ghost_timeout(&self) -> Duration {
        NODE_TIMEOUT
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_nodes() {
    suite::presence_crosses_nodes(&Redis::new("cross")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_untracks_cross_nodes() {
    suite::updates_and_untracks_cross_nodes(&Redis::new("updates")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnects_leave_everywhere() {
    suite::disconnects_leave_everywhere(&Redis::new("drops")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_crosses_nodes() {
    suite::broadcast_crosses_nodes(&Redis::new("talk")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_broadcasts_reach_other_nodes() {
    suite::server_broadcasts_reach_other_nodes(&Redis::new("announce")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_removes_presences() {
    suite::clean_stop_removes_presences(&Redis::new("stop")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_removes_presences() {
    let redis = Redis::new("crash");
    let took = suite::crash_removes_presences(&redis).await;
    println!(
        "redis: a crashed node's last ghost left after {took:?} (node timeout {NODE_TIMEOUT:?})"
    );
}
