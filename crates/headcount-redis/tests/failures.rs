//! What happens when Redis or the network fails: nodes in this process, a real `redis-server`
//! that is killed, restarted empty, frozen, made to kick its subscribers, or cut off from one
//! node by a proxy.

mod common;

use std::time::{Duration, Instant};

use common::*;
use headcount_cluster::Cluster;
use headcount_testkit::Frame;
use headcount_testkit::redis::RedisServer;
use serde_json::json;

/// Long enough for anything that must cross nodes after a recovery.
const CONVERGE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_then_restarted_empty_nodes_reassert_and_converge() {
    let mut redis = RedisServer::start();
    let opts = options("restart");
    let a = Node::start(&redis.url(), &opts).await;
    let b = Node::start(&redis.url(), &opts).await;
    let topic = "realtime:restart";
    let (mut alice, ja) = member(&a.server, topic, "alice").await;
    let (mut bob, jb) = member(&b.server, topic, "bob").await;
    track(&mut alice, &ja, topic, json!({"n": 1})).await;
    track(&mut bob, &jb, topic, json!({"n": 1})).await;
    let both = expect_view(&[("alice", json!({"n": 1})), ("bob", json!({"n": 1}))]);
    eventually("both nodes see both", CONVERGE, || {
        a.view(topic) == both && b.view(topic) == both
    })
    .await;

    redis.kill();
    // Nothing hangs and local presence goes on while Redis is gone.
    let took = track(&mut alice, &ja, topic, json!({"n": 2})).await;
    heartbeat(&mut alice).await;
    let (mut carol, jc) = member(&a.server, topic, "carol").await;
    track(&mut carol, &jc, topic, json!({"n": 1})).await;
    eventually("node 1 reports redis down", CONVERGE, || {
        !a.cluster.health().connected
    })
    .await;
    println!("a track while redis is down answered in {took:?}");
    let ready = headcount_testkit::http::get(a.server.addr, "/readyz", &[]).await;
    assert_eq!(ready.status, 503, "/readyz: {}", ready.text());
    assert!(
        ready.text().contains("redis unreachable"),
        "{}",
        ready.text()
    );
    assert_eq!(
        a.view(topic),
        expect_view(&[
            ("alice", json!({"n": 2})),
            ("bob", json!({"n": 1})),
            ("carol", json!({"n": 1}))
        ]),
        "local changes apply at once; the replica of node 2 is kept"
    );

    redis.restart_empty();
    let all = expect_view(&[
        ("alice", json!({"n": 2})),
        ("bob", json!({"n": 1})),
        ("carol", json!({"n": 1})),
    ]);
    let took = eventually("both nodes converge after the restart", CONVERGE, || {
        a.view(topic) == all && b.view(topic) == all
    })
    .await;
    println!("converged {took:?} after redis came back empty");
    eventually("health recovers", CONVERGE, || {
        a.cluster.health().connected && b.cluster.health().connected
    })
    .await;
    let ready = headcount_testkit::http::get(a.server.addr, "/readyz", &[]).await;
    assert_eq!(ready.status, 200, "/readyz: {}", ready.text());
    assert_eq!(
        redis
            .command(&["HLEN", &format!("{}:{{pub:{topic}}}:presence", opts.prefix)])
            .unwrap(),
        ":3",
        "every entry is back in redis"
    );
    // A newcomer on node 2 gets the whole state at once.
    let mut dave = b.server.client("2.0.0").await;
    let (_, reply) = dave
        .join_with(topic, json!({"config": presence("dave")}))
        .await;
    assert_eq!(reply.payload["status"], "ok");
    let state = dave.recv_msg().await;
    assert_eq!(state.event, "presence_state");
    let mut keys: Vec<&String> = state.payload.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["alice", "bob", "carol"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_nothing_hangs_and_nodes_converge_after() {
    let mut redis = RedisServer::start();
    let opts = options("freeze");
    let a = Node::start(&redis.url(), &opts).await;
    let b = Node::start(&redis.url(), &opts).await;
    let topic = "realtime:freeze";
    let (mut alice, ja) = member(&a.server, topic, "alice").await;
    let (mut listener, _) = member(&a.server, topic, "listener").await;
    let (mut bob, jb) = member(&b.server, topic, "bob").await;
    track(&mut alice, &ja, topic, json!({"n": 1})).await;
    track(&mut bob, &jb, topic, json!({"n": 1})).await;
    let both = expect_view(&[("alice", json!({"n": 1})), ("bob", json!({"n": 1}))]);
    eventually("both nodes see both", CONVERGE, || {
        a.view(topic) == both && b.view(topic) == both
    })
    .await;
    drain(&mut listener).await;

    redis.freeze();
    let frozen = Instant::now();
    // Longer than the call timeout and the node timeout: every heartbeat key expires meanwhile.
    let mut worst = Duration::ZERO;
    let mut n = 1;
    while frozen.elapsed() < Duration::from_secs(3) {
        n += 1;
        worst = worst.max(track(&mut alice, &ja, topic, json!({"n": n})).await);
        worst = worst.max(heartbeat(&mut alice).await);
        // Same-node broadcast goes on.
        alice
            .push(
                &ja,
                topic,
                "broadcast",
                json!({"type": "broadcast", "event": "ping", "payload": {"n": n}}),
            )
            .await;
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match listener.try_recv(left).await {
                Some(Frame::Text(t))
                    if t.contains("\"ping\"") && t.contains(&format!("\"n\":{n}")) =>
                {
                    break;
                }
                Some(Frame::Text(_)) => {}
                other => panic!(
                    "the same-node broadcast did not arrive while redis was frozen: {other:?}"
                ),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("slowest reply while redis was frozen: {worst:?}");
    assert!(!a.cluster.health().connected, "health tells the truth");
    redis.thaw();

    let after = expect_view(&[("alice", json!({"n": n})), ("bob", json!({"n": 1}))]);
    let took = eventually("both nodes converge after the freeze", CONVERGE, || {
        a.view(topic) == after && b.view(topic) == after
    })
    .await;
    println!("converged {took:?} after redis was thawed");
    // A freeze is not a death: nobody reaped anybody.
    tokio::time::sleep(NODE_TIMEOUT).await;
    assert_eq!(a.view(topic), after);
    assert_eq!(b.view(topic), after);
    assert_eq!(
        a.cluster.stats().nodes_reaped + b.cluster.stats().nodes_reaped,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_kicked_by_the_output_buffer_limit_resubscribes_and_resyncs() {
    let redis = RedisServer::start();
    let opts = options("kick");
    let a = Node::start(&redis.url(), &opts).await;
    let b = Node::start(&redis.url(), &opts).await;
    let topic = "realtime:kick";
    let (mut alice, ja) = member(&a.server, topic, "alice").await;
    let (_bob, _) = member(&b.server, topic, "bob").await;
    track(&mut alice, &ja, topic, json!({"n": 1})).await;
    let one = expect_view(&[("alice", json!({"n": 1}))]);
    eventually("node 2 sees alice", CONVERGE, || b.view(topic) == one).await;
    let connections = b.cluster.stats().pubsub_connections;

    assert_eq!(
        redis
            .command(&[
                "CONFIG",
                "SET",
                "client-output-buffer-limit",
                "pubsub 1024 1024 0"
            ])
            .unwrap(),
        "+OK"
    );
    // One broadcast bigger than the limit: every subscriber of the channel is disconnected.
    let big = "x".repeat(64 * 1024);
    alice
        .push(
            &ja,
            topic,
            "broadcast",
            json!({"type": "broadcast", "event": "big", "payload": {"big": big}}),
        )
        .await;
    // A change right away: published while node 2's subscriber may be gone.
    track(&mut alice, &ja, topic, json!({"n": 2})).await;
    eventually("node 2 reconnects its subscriber", CONVERGE, || {
        b.cluster.stats().pubsub_connections > connections
    })
    .await;
    assert_eq!(
        redis
            .command(&[
                "CONFIG",
                "SET",
                "client-output-buffer-limit",
                "pubsub 32mb 8mb 60"
            ])
            .unwrap(),
        "+OK"
    );
    let two = expect_view(&[("alice", json!({"n": 2}))]);
    eventually("node 2 resyncs", CONVERGE, || b.view(topic) == two).await;
    track(&mut alice, &ja, topic, json!({"n": 3})).await;
    let three = expect_view(&[("alice", json!({"n": 3}))]);
    eventually("and follows again", CONVERGE, || b.view(topic) == three).await;
    println!("node 2 stats after the kick: {:?}", b.cluster.stats());
}

/// Node 1 talks to Redis through a proxy; the proxy is cut for `cut_for`.
async fn cut_off(cut_for: Duration) {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port).await;
    let opts = options("cut");
    let a = Node::start(&proxy.url(), &opts).await;
    let b = Node::start(&redis.url(), &opts).await;
    let topic = "realtime:cut";
    let (mut alice, ja) = member(&a.server, topic, "alice").await;
    let (mut bob, jb) = member(&b.server, topic, "bob").await;
    track(&mut alice, &ja, topic, json!({"n": 1})).await;
    track(&mut bob, &jb, topic, json!({"n": 1})).await;
    let both = expect_view(&[("alice", json!({"n": 1})), ("bob", json!({"n": 1}))]);
    eventually("both nodes see both", CONVERGE, || {
        a.view(topic) == both && b.view(topic) == both
    })
    .await;

    proxy.cut();
    let started = Instant::now();
    track(&mut alice, &ja, topic, json!({"n": 2})).await;
    track(&mut bob, &jb, topic, json!({"n": 2})).await;
    heartbeat(&mut alice).await;
    if cut_for > NODE_TIMEOUT {
        let took = eventually("node 2 reaps the node it cannot hear", CONVERGE, || {
            b.view(topic) == expect_view(&[("bob", json!({"n": 2}))])
        })
        .await;
        println!("node 1 cut off: its members left node 2 after {took:?}");
        assert!(took <= NODE_TIMEOUT + Duration::from_secs(1), "{took:?}");
    }
    eventually("node 1 knows", CONVERGE, || !a.cluster.health().connected).await;
    assert_eq!(
        a.view(topic),
        expect_view(&[("alice", json!({"n": 2})), ("bob", json!({"n": 1}))]),
        "node 1 keeps its own members and its last view of the others"
    );
    tokio::time::sleep(cut_for.saturating_sub(started.elapsed())).await;

    proxy.heal();
    let healed = expect_view(&[("alice", json!({"n": 2})), ("bob", json!({"n": 2}))]);
    let took = eventually("both nodes converge once healed", CONVERGE, || {
        a.view(topic) == healed && b.view(topic) == healed
    })
    .await;
    println!("converged {took:?} after the cut of {cut_for:?} healed");
    assert!(a.cluster.health().connected);
    track(&mut alice, &ja, topic, json!({"n": 3})).await;
    let after = expect_view(&[("alice", json!({"n": 3})), ("bob", json!({"n": 2}))]);
    eventually("and changes flow again", CONVERGE, || {
        b.view(topic) == after
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cut_off_briefly_converges_once_healed() {
    cut_off(Duration::from_millis(1200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cut_off_past_its_timeout_is_reaped_then_comes_back() {
    cut_off(Duration::from_secs(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_a_new_node_and_its_old_presences_never_come_back() {
    let redis = RedisServer::start();
    let opts = options("reborn");
    let watcher = Node::start(&redis.url(), &opts).await;
    let topic = "realtime:reborn";
    let (_w, _) = member(&watcher.server, topic, "watcher").await;
    let first = Node::start(&redis.url(), &opts).await;
    let old_id = first.cluster.node_id().to_owned();
    let (mut alice, ja) = member(&first.server, topic, "alice").await;
    track(&mut alice, &ja, topic, json!({"life": 1})).await;
    let old = expect_view(&[("alice", json!({"life": 1}))]);
    eventually("the watcher sees alice", CONVERGE, || {
        watcher.view(topic) == old
    })
    .await;

    first.crash();
    drop(alice);
    // The same setup again: a new process would do exactly this.
    let second = Node::start(&redis.url(), &opts).await;
    assert_ne!(second.cluster.node_id(), old_id, "a fresh node id");
    let (mut alice, ja) = member(&second.server, topic, "alice").await;
    track(&mut alice, &ja, topic, json!({"life": 2})).await;
    let new = expect_view(&[("alice", json!({"life": 2}))]);
    let took = eventually("the old life is reaped", CONVERGE, || {
        watcher.view(topic) == new && second.view(topic) == new
    })
    .await;
    println!("the previous life's presence left after {took:?}");
    // And it never comes back.
    let until = Instant::now() + 2 * NODE_TIMEOUT;
    while Instant::now() < until {
        assert_eq!(watcher.view(topic), new);
        assert_eq!(second.view(topic), new);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fields = redis
        .command(&[
            "HKEYS",
            &format!("{}:{{pub:{topic}}}:presence", opts.prefix),
        ])
        .unwrap();
    assert!(
        !fields.contains(&old_id),
        "no field of the old node: {fields}"
    );
    assert_eq!(
        redis
            .command(&["SISMEMBER", &format!("{}:nodes", opts.prefix), &old_id])
            .unwrap(),
        ":0",
        "the old node is gone from the registry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_connect_fast_and_bad_options_are_refused() {
    let port = headcount_testkit::process::free_port();
    let started = Instant::now();
    let err = headcount_redis::RedisCluster::connect(
        &format!("redis://127.0.0.1:{port}/"),
        options("nowhere"),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().starts_with("cannot reach Redis"), "{err}");
    let err = headcount_redis::RedisCluster::connect("http://x", options("bad"))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("invalid Redis URL"), "{err}");
    let err = headcount_redis::RedisCluster::connect(
        &format!("redis://127.0.0.1:{port}/"),
        options("x").with_prefix("a{b}"),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with("invalid Redis options"),
        "{err}"
    );
}

/// `"<keys> <without expiry> <largest PTTL>"` for the keys matching `pattern`.
fn key_census(redis: &RedisServer, pattern: &str) -> (u64, u64, i64) {
    const CENSUS: &str = "local n, forever, longest = 0, 0, 0 \
        for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
          n = n + 1 \
          local t = redis.call('PTTL', k) \
          if t < 0 then forever = forever + 1 elseif t > longest then longest = t end \
        end \
        return n .. ' ' .. forever .. ' ' .. longest";
    let out = redis
        .command(&["EVAL", CENSUS, "0", pattern])
        .expect("redis answers");
    let mut parts = out.split(' ');
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<i64>().ok())
            .expect(&out)
    };
    (next() as u64, next() as u64, next())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptied_channels_leave_only_sequence_keys_that_expire_within_a_minute() {
    let redis = RedisServer::start();
    let opts = options("churn");
    let a = Node::start(&redis.url(), &opts).await;
    let channels = 40;
    for i in 0..channels {
        let topic = format!("realtime:churn-{i}");
        let (mut c, jr) = member(&a.server, &topic, "visitor").await;
        track(&mut c, &jr, &topic, json!({"i": i})).await;
        drop(c); // the socket closes: the channel empties
    }
    let presence = format!("{}:{{pub:realtime:churn-*}}:presence", opts.prefix);
    let seq = format!("{}:{{pub:realtime:churn-*}}:seq", opts.prefix);
    eventually("every channel is empty in redis", CONVERGE, || {
        a.cluster.is_settled() && key_census(&redis, &presence).0 == 0
    })
    .await;
    // A channel emptied before the writer wrote its join leaves nothing at all (the write is
    // coalesced into the leave); every other one leaves its sequence number.
    let (keys, forever, longest) = key_census(&redis, &seq);
    assert!(keys > 0 && keys <= channels, "{keys} sequence keys");
    println!("{keys} sequence keys left, the longest-lived expires in {longest} ms");
    assert_eq!(
        forever, 0,
        "no sequence key of an empty channel lives forever"
    );
    assert!(
        longest > 0 && longest <= 60_000,
        "the sequence keys expire within the retention (60 s): {longest} ms"
    );
    // Nothing else of those channels is left behind.
    let all = format!("{}:{{pub:realtime:churn-*", opts.prefix);
    assert_eq!(key_census(&redis, &all).0, keys);
}
