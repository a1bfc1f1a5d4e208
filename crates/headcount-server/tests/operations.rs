//! Health, readiness and metrics over HTTP.

use headcount_testkit::{TestServer, http};
use serde_json::json;

fn sample(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
}

async fn scrape(server: &TestServer) -> prometheus_parse::Scrape {
    let resp = http::get(server.addr, "/metrics", &[]).await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let lines = resp
        .text()
        .lines()
        .map(|l| Ok(l.to_owned()))
        .collect::<Vec<_>>();
    prometheus_parse::Scrape::parse(lines.into_iter()).expect("valid Prometheus text")
}

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::start().await;
    let health = http::get(server.addr, "/healthz", &[]).await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));
    let ready = http::get(server.addr, "/readyz", &[]).await;
    assert_eq!(
        (ready.status, ready.json()),
        (200, json!({"status": "ready"}))
    );
    server
        .hub
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let draining = http::get(server.addr, "/readyz", &[]).await;
    assert_eq!(
        (draining.status, draining.json()),
        (503, json!({"status": "draining"}))
    );
}

#[tokio::test]
async fn metrics_count_what_happens() {
    let server = TestServer::start_with(|c| c.limits.max_channels_per_client = 1).await;
    let before = scrape(&server).await;
    assert_eq!(sample(&before, "headcount_connections", None), 0.0);

    let mut a = server.client("2.0.0").await;
    let mut b = server.client("1.0.0").await;
    let ja = a
        .join(
            "realtime:m",
            json!({"presence": {"key": "a", "enabled": true}, "broadcast": {"ack": true}}),
        )
        .await;
    b.join("realtime:m", json!({})).await;
    let r = a
        .push(
            &ja,
            "realtime:m",
            "presence",
            json!({"type":"presence","event":"track","payload":{}}),
        )
        .await;
    a.expect_reply(&r).await;
    let r = a
        .push(
            &ja,
            "realtime:m",
            "broadcast",
            json!({"type":"broadcast","event":"e","payload":{}}),
        )
        .await;
    a.expect_reply(&r).await;
    b.expect_event("realtime:m", "broadcast").await;
    let (_, refused) = a.join_with("realtime:second", json!({"config": {}})).await;
    assert_eq!(refused.payload["status"], "error");
    a.send_text("not json").await;
    let refused = headcount_testkit::WsClient::connect(&server.ws_url(Some("9.9.9"), "x")).await;
    assert!(refused.is_err());

    let after = scrape(&server).await;
    assert_eq!(sample(&after, "headcount_connections", None), 2.0);
    assert_eq!(sample(&after, "headcount_users", None), 2.0);
    assert_eq!(sample(&after, "headcount_channels", None), 1.0);
    assert_eq!(sample(&after, "headcount_presences", None), 1.0);
    assert_eq!(sample(&after, "headcount_connections_total", None), 2.0);
    assert_eq!(
        sample(&after, "headcount_connections_refused_total", None),
        1.0
    );
    assert_eq!(sample(&after, "headcount_joins_total", None), 2.0);
    assert_eq!(sample(&after, "headcount_join_errors_total", None), 1.0);
    assert_eq!(sample(&after, "headcount_broadcasts_total", None), 1.0);
    assert_eq!(sample(&after, "headcount_presence_events_total", None), 1.0);
    assert_eq!(
        sample(
            &after,
            "headcount_limit_refusals_total",
            Some(("limit", "channels_per_client"))
        ),
        1.0
    );
    assert!(sample(&after, "headcount_messages_in_total", None) >= 5.0);
    assert_eq!(
        sample(&after, "headcount_messages_dropped_total", None),
        1.0,
        "the text that was not JSON"
    );
    assert!(sample(&after, "headcount_bytes_in_total", None) > 0.0);
    assert!(sample(&after, "headcount_bytes_out_total", None) > 0.0);
    let fanouts = after
        .samples
        .iter()
        .find(|s| s.metric == "headcount_fanout_seconds")
        .expect("a histogram");
    match &fanouts.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(
                buckets.last().unwrap().count,
                1.0,
                "one broadcast was fanned out"
            );
        }
        other => panic!("not a histogram: {other:?}"),
    }
}
