//! The `headcount serve` front door: settings precedence, `--print-config`, and logs that
//! never carry a token or a key, at any level.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use headcount_testkit::process::{binary, free_port};
use headcount_testkit::{SECRET, WsClient, token, user_token};
use serde_json::json;

fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(binary())
        .arg("serve")
        .args(args)
        .arg("--print-config")
        .envs(env.iter().copied())
        .env_remove("HEADCOUNT_JWT_SECRET")
        .output()
        .expect("run headcount");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn flags_beat_environment_which_beats_the_file() {
    let dir = std::env::temp_dir().join(format!("headcount-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("headcount.toml");
    std::fs::write(
        &file,
        "idle_timeout = 7\nmax_channels_per_client = 9\nunjoined_timeout = 11\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let shown = print_config(
        &[
            "--config",
            file,
            "--idle-timeout",
            "5",
            "--jwt-secret",
            "-starts-with-a-dash-and-is-long-enough",
        ],
        &[
            ("HEADCOUNT_IDLE_TIMEOUT", "6"),
            ("HEADCOUNT_MAX_CHANNELS_PER_CLIENT", "8"),
        ],
    );
    assert!(
        shown.contains("idle_timeout = 5\n"),
        "the flag wins: {shown}"
    );
    assert!(
        shown.contains("max_channels_per_client = 8\n"),
        "the environment beats the file: {shown}"
    );
    assert!(
        shown.contains("unjoined_timeout = 11\n"),
        "the file beats the default: {shown}"
    );
    assert!(
        shown.contains("max_payload_size_kb = 3000\n"),
        "defaults fill the rest: {shown}"
    );
    assert!(
        shown.contains(r#"jwt_secret = "<redacted>""#) && !shown.contains("starts-with-a-dash"),
        "{shown}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_settings_files_are_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("headcount-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "idle_timout = 7\n").unwrap();
    let out = Command::new(binary())
        .args(["serve", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("idle_timout"), "names the unknown key: {err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn tokens_and_keys_never_reach_the_logs_even_at_trace_level() {
    let port = free_port();
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--jwt-secret",
            SECRET,
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run headcount");
    let mut stdout = child.stdout.take().unwrap();
    let mut banner = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&banner).contains("anon key") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "the server exited");
        banner.extend_from_slice(&buf[..n]);
    }

    let apikey = token("anon", 600);
    let channel_token = user_token("authenticated", "user-1", 600);
    let refreshed = user_token("authenticated", "user-1", 1200);
    let bad = headcount_server::auth::sign("wrong-secret", "anon", None, 0, i64::MAX / 2);
    let url = format!("ws://127.0.0.1:{port}/realtime/v1/websocket?vsn=2.0.0&apikey={apikey}");
    let mut c = WsClient::connect(&url).await.expect("connect");
    let (jr, _) = c
        .join_with(
            "realtime:r",
            json!({"config": {}, "access_token": channel_token}),
        )
        .await;
    c.push(
        &jr,
        "realtime:r",
        "access_token",
        json!({"access_token": refreshed}),
    )
    .await;
    let (_, refused) = c
        .join_with("realtime:s", json!({"config": {}, "access_token": bad}))
        .await;
    assert_eq!(refused.payload["status"], "error");
    let refused = WsClient::connect(&format!(
        "ws://127.0.0.1:{port}/realtime/v1/websocket?apikey={bad}"
    ))
    .await;
    assert!(refused.is_err());
    c.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await; // let the last log lines out

    // SIGTERM, then read everything it logged.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        logs.contains(r#""level":"DEBUG""#),
        "debug logging was on: {logs}"
    );
    for line in logs.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    for (what, secret) in [
        ("the apikey", apikey.as_str()),
        ("a channel token", channel_token.as_str()),
        ("a refreshed token", refreshed.as_str()),
        ("a refused token", bad.as_str()),
        ("the JWT secret", SECRET),
    ] {
        // Any long piece of it would be a leak, not only the whole string.
        let piece = &secret[secret.len() / 2..];
        assert!(!logs.contains(piece), "{what} appears in the logs");
    }
}
