//! A first run with no surprises, through the real binary: what `serve` refuses at start and
//! why, what its banner and default-level logs say, `token`'s flags, and `--help`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use headcount_bench::args::Scenario;
use headcount_testkit::process::{binary, free_port};
use headcount_testkit::{SECRET, WsClient, now_secs};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// Runs `headcount ARGS` to its end; a command that is still running after [`WAIT`] (a server
/// that started when it should have refused) is killed, and reported as a failure to refuse.
fn run(args: &[&str]) -> Output {
    headcount_testkit::process::run_to_exit(args, WAIT).unwrap_or_else(|| {
        panic!(
            "`headcount {}` was still running after {WAIT:?}",
            args.join(" ")
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn secret_of(len: usize) -> String {
    "s".repeat(len)
}

/// `headcount serve ARGS` with the default log level, its banner read up to the blank line
/// that ends it, and its stderr collected in the background.
struct Serve {
    child: Child,
    port: u16,
    banner: String,
    logs: mpsc::Receiver<String>,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        let port = free_port();
        let mut child = Command::new(binary())
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(args)
            .env_remove("HEADCOUNT_JWT_SECRET")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run headcount");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        loop {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the server exited: {banner}");
            if line == "\n" && banner.contains("API URL") {
                break;
            }
            banner.push_str(&line);
        }
        let (tx, logs) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Serve {
            child,
            port,
            banner,
            logs,
        }
    }

    fn ws_url(&self, apikey: &str) -> String {
        format!(
            "ws://127.0.0.1:{}/realtime/v1/websocket?vsn=2.0.0&apikey={apikey}",
            self.port
        )
    }

    /// The first log line that contains every one of `parts`, within [`WAIT`].
    fn log_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if parts.iter().all(|p| line.contains(p)) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {parts:?}"),
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn secrets_shorter_than_32_bytes_empty_or_the_placeholder_are_refused_at_start() {
    for (secret, why) in [
        (String::new(), "is empty"),
        ("x".into(), "1 bytes long; it must be at least 32 bytes"),
        (secret_of(31), "31 bytes long; it must be at least 32 bytes"),
        ("<redacted>".into(), "placeholder"),
    ] {
        let out = run(&["serve", "--bind", "127.0.0.1:0", "--jwt-secret", &secret]);
        assert!(!out.status.success(), "{secret:?} was accepted");
        assert!(stderr(&out).contains(why), "{secret:?}: {}", stderr(&out));
        let token = run(&["token", "--jwt-secret", &secret, "--role", "anon"]);
        assert!(!token.status.success(), "token signed with {secret:?}");
        assert!(stderr(&token).contains(why), "{}", stderr(&token));
    }
    let token = run(&["token", "--jwt-secret", &secret_of(32), "--role", "anon"]);
    assert!(token.status.success(), "{}", stderr(&token));
    let server = Serve::start(&["--jwt-secret", &secret_of(32)]);
    assert!(server.banner.contains("anon key"), "{}", server.banner);
}

#[test]
fn a_file_written_by_print_config_does_not_make_the_placeholder_the_secret() {
    let dir = std::env::temp_dir().join(format!("headcount-first-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let printed = run(&["serve", "--jwt-secret", SECRET, "--print-config"]);
    assert!(printed.status.success(), "{}", stderr(&printed));
    let file = dir.join("printed.toml");
    std::fs::write(&file, &printed.stdout).unwrap();
    let out = run(&["serve", "--config", file.to_str().unwrap()]);
    assert!(!out.status.success(), "the placeholder became the secret");
    assert!(stderr(&out).contains("placeholder"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_empty_secret_variable_counts_as_unset() {
    let server = {
        // Spawned by hand: `Serve` removes the variable.
        let port = free_port();
        let out = Command::new(binary())
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--print-config",
            ])
            .env("HEADCOUNT_JWT_SECRET", "")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(!server.contains("jwt_secret"), "{server}");
    let token = Command::new(binary())
        .args(["token", "--role", "anon"])
        .env("HEADCOUNT_JWT_SECRET", "")
        .output()
        .unwrap();
    assert!(!token.status.success());
    assert!(
        stderr(&token).contains("--jwt-secret"),
        "{}",
        stderr(&token)
    );
}

#[test]
fn cluster_mode_with_a_generated_secret_is_refused() {
    // Nothing listens on port 9: the check comes before any connection to Redis.
    let out = run(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--redis",
        "redis://127.0.0.1:9",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cluster mode") && err.contains("pass --jwt-secret"),
        "{err}"
    );
}

#[test]
fn redis_credentials_never_reach_print_config() {
    for (url, password) in [
        (
            "redis+unix:///run/redis.sock?db=1&pass=pw-in-query",
            "pw-in-query",
        ),
        ("unix:///run/redis.sock?password=pw-in-query", "pw-in-query"),
        (
            "redis://me:pw-in-userinfo@127.0.0.1:6379/0",
            "pw-in-userinfo",
        ),
        ("rediss://:pw-in-userinfo@127.0.0.1:6380", "pw-in-userinfo"),
    ] {
        let out = run(&[
            "serve",
            "--jwt-secret",
            SECRET,
            "--redis",
            url,
            "--print-config",
        ]);
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            !shown.contains(password) && shown.contains("<redacted>"),
            "{url}: {shown}"
        );
    }
}

#[test]
fn allowed_origins_are_normalised_or_refused_at_start() {
    let out = run(&[
        "serve",
        "--jwt-secret",
        SECRET,
        "--allowed-origins",
        "https://App.example.com/,http://localhost:80",
        "--print-config",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(r#"allowed_origins = ["https://app.example.com", "http://localhost"]"#),
        "{shown}"
    );
    for (entry, why) in [
        (
            "https://app.example.com/app",
            r#"use "https://app.example.com""#,
        ),
        ("app.example.com", "has no scheme"),
        ("*", "leave --allowed-origins empty"),
    ] {
        let out = run(&["serve", "--jwt-secret", SECRET, "--allowed-origins", entry]);
        assert!(!out.status.success(), "{entry} was accepted");
        assert!(stderr(&out).contains(why), "{entry}: {}", stderr(&out));
    }
}

#[tokio::test]
async fn a_normalised_origin_matches_what_browsers_send() {
    let server = Serve::start(&[
        "--jwt-secret",
        SECRET,
        "--allowed-origins",
        "https://app.example.com/",
    ]);
    let apikey = headcount_testkit::token("anon", 600);
    let connect = |origin: &'static str| {
        let url = server.ws_url(&apikey);
        async move {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut req = url.into_client_request().unwrap();
            req.headers_mut().insert("origin", origin.parse().unwrap());
            match tokio_tungstenite::connect_async(req).await {
                Ok(_) => 101,
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
                Err(e) => panic!("{e}"),
            }
        }
    };
    assert_eq!(connect("https://app.example.com").await, 101);
    assert_eq!(connect("https://evil.example.com").await, 403);
}

#[tokio::test]
async fn the_banner_names_the_pages_and_refused_upgrades_are_logged_with_reason_and_address() {
    let server = Serve::start(&[
        "--jwt-secret",
        SECRET,
        "--allowed-origins",
        "https://app.example.com",
    ]);
    let base = format!("http://127.0.0.1:{}", server.port);
    assert!(
        server.banner.contains(&format!("Demo page: {base}/\n")),
        "{}",
        server.banner
    );
    assert!(
        server
            .banner
            .contains(&format!("Admin page: {base}/admin\n")),
        "{}",
        server.banner
    );

    let bad = headcount_server::auth::sign(&secret_of(40), "anon", None, 0, i64::MAX / 2);
    let expired = headcount_testkit::token("anon", -30);
    for (token, reason) in [
        (&bad, "Failed to validate JWT signature"),
        (&expired, "Token has expired"),
    ] {
        let refused = WsClient::connect(&server.ws_url(token))
            .await
            .err()
            .unwrap();
        assert_eq!(refused.status, 401);
        let line = server.log_line(&["refused a WebSocket upgrade", reason]);
        assert!(line.contains("127.0.0.1:"), "the remote address: {line}");
        assert!(line.contains("INFO") || line.contains("WARN"), "{line}");
        let piece = &token[token.len() / 2..];
        assert!(!line.contains(piece), "the token is logged: {line}");
    }

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = server
        .ws_url(&headcount_testkit::token("anon", 600))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example.com".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    let line = server.log_line(&["refused a WebSocket upgrade", "Origin not allowed"]);
    assert!(
        line.contains("https://evil.example.com") && line.contains("127.0.0.1:"),
        "{line}"
    );
}

fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let part = token.trim().split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn token_takes_custom_claims_and_durations_and_refuses_empty_lifetimes() {
    let before = now_secs();
    let out = run(&[
        "token",
        "--jwt-secret",
        SECRET,
        "--role",
        "authenticated",
        "--sub",
        "u1",
        "--exp-in",
        "7d",
        "--claim",
        "aal=aal2",
        "--claim",
        r#"app_metadata={"plan":"pro","seats":3}"#,
        "--claim",
        "level=3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = claims_of(&token);
    assert_eq!(claims["aal"], "aal2");
    assert_eq!(claims["app_metadata"]["plan"], "pro");
    assert_eq!(claims["app_metadata"]["seats"], 3);
    assert_eq!(claims["level"], 3);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 7 * 86_400);
    assert!(claims["iat"].as_i64().unwrap() >= before);
    // The server accepts it with its claims.
    let verified = headcount_server::auth::Verifier::new(SECRET)
        .verify(token.trim(), now_secs())
        .unwrap();
    assert_eq!(verified.all["aal"], "aal2");

    for (given, seconds) in [("90s", 90), ("90", 90), ("1h", 3600), ("15m", 900)] {
        let out = run(&[
            "token",
            "--jwt-secret",
            SECRET,
            "--role",
            "anon",
            "--exp-in",
            given,
        ]);
        assert!(out.status.success(), "{given}: {}", stderr(&out));
        let claims = claims_of(&String::from_utf8(out.stdout).unwrap());
        let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        assert_eq!(lifetime, seconds, "{given}");
    }
    for given in ["0", "0s", "-5", "-1h", "1w", "soon"] {
        let out = run(&[
            "token",
            "--jwt-secret",
            SECRET,
            "--role",
            "anon",
            "--exp-in",
            given,
        ]);
        assert!(!out.status.success(), "{given} was accepted");
        assert!(
            stderr(&out).contains("--exp-in"),
            "{given}: {}",
            stderr(&out)
        );
    }
    let out = run(&[
        "token",
        "--jwt-secret",
        SECRET,
        "--role",
        "anon",
        "--claim",
        "novalue",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("KEY=VALUE"), "{}", stderr(&out));
}

#[test]
fn help_hides_unset_variables_and_lists_every_bench_scenario() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["token", "--help"],
        &["watch", "--help"],
        &["bench", "--help"],
    ] {
        let out = Command::new(binary())
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}");
        assert!(
            !help.contains("=]"),
            "{args:?} shows an empty value: {help}"
        );
    }
    let top = run(&["--help"]);
    let bench = run(&["bench", "--help"]);
    for scenario in Scenario::value_variants() {
        let name = scenario.name();
        for (what, out) in [
            ("headcount --help", &top),
            ("headcount bench --help", &bench),
        ] {
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(name),
                "{what} does not list {name}"
            );
        }
    }
    // A variable that is set still shows its value (it is not a secret).
    let out = Command::new(binary())
        .args(["serve", "--help"])
        .env("HEADCOUNT_IDLE_TIMEOUT", "42")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("HEADCOUNT_IDLE_TIMEOUT=42"));
}

/// Reads everything a finished child wrote to stdout (for `watch`, which exits by itself).
fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn watch_defaults_to_port_4000_and_stops_on_a_401_with_the_reason() {
    let help = run(&["watch", "--help"]);
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("[default: http://127.0.0.1:4000]"),
        "{}",
        String::from_utf8_lossy(&help.stdout)
    );
    let server = Serve::start(&["--jwt-secret", SECRET]);
    let expired = headcount_testkit::token("anon", -30);
    let mut child = Command::new(binary())
        .args([
            "watch",
            "room",
            "--url",
            &format!("http://127.0.0.1:{}", server.port),
            "--apikey",
            &expired,
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("watch kept retrying after a 401");
        }
        std::thread::sleep(Duration::from_millis(50)); // polling the exit, not settling
    };
    let err = read_all(child.stderr.take().unwrap());
    assert!(!status.success());
    assert!(
        err.contains("the server refused the connection: Token has expired"),
        "{err}"
    );
}

/// Defect: the password of a `redis+unix://...?pass=` URL was printed in the start banner.
/// A real Redis on a Unix socket that requires that password, so the node really connects.
#[test]
fn the_banner_hides_the_password_of_a_unix_socket_redis_url() {
    let dir = std::env::temp_dir().join(format!("headcount-banner-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("redis.sock");
    let password = "pw-of-the-unix-socket-redis";
    let mut redis = Command::new("redis-server")
        .args(["--port", "0", "--unixsocket", socket.to_str().unwrap()])
        .args([
            "--requirepass",
            password,
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test installs it)");
    let deadline = Instant::now() + WAIT;
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not open its socket"
        );
        std::thread::sleep(Duration::from_millis(20)); // polling for the socket, not settling
    }
    let url = format!("redis+unix://{}?pass={password}", socket.display());
    let server = Serve::start(&["--jwt-secret", SECRET, "--redis", &url]);
    let banner = server.banner.clone();
    drop(server);
    let _ = redis.kill();
    let _ = redis.wait();
    std::fs::remove_dir_all(&dir).ok();
    assert!(banner.contains("cluster: node"), "{banner}");
    assert!(
        !banner.contains(password) && banner.contains("?pass=<redacted>"),
        "{banner}"
    );
}
