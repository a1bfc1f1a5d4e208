//! `headcount watch`: joins a channel, tracks itself, and shows who is there.
//!
//! In a terminal it redraws a screen: the people present with their statuses, the count, and a
//! log of joins and leaves. With `--json` (or when the output is not a terminal) it writes one
//! line per event instead; `--json` lines are JSON objects for scripts:
//!
//! ```text
//! {"event":"sync","count":2,"state":{"alice":[{"presence_ref":"...","status":"online"}],...}}
//! {"event":"join","key":"bob","current":[],"new":[{"presence_ref":"...","status":"online"}]}
//! {"event":"leave","key":"bob","current":[],"left":[{"presence_ref":"...","status":"online"}]}
//! ```
//!
//! Connection and channel statuses go to stderr in `--json` mode, so stdout stays parseable.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use headcount_client::{
    ChannelOptions, ConnectionState, PresenceEvent, PresenceMeta, PresenceState, RealtimeClient,
    RecvError, Serializer, StatusEvent,
};
use serde_json::{Value, json};

/// Arguments of `headcount watch`.
#[derive(Args, Debug)]
pub(crate) struct WatchArgs {
    /// The channel name (without the `realtime:` prefix).
    channel: String,
    /// The server: `http(s)://host[:port]` as given to supabase-js, or a `ws(s)://` endpoint.
    #[arg(long, env = "HEADCOUNT_URL", default_value = "http://127.0.0.1:4000")]
    url: String,
    /// The API key (the anon key).
    #[arg(long, env = "HEADCOUNT_APIKEY", hide_env_values = true)]
    apikey: String,
    /// The presence key to track under; by default the server picks a UUID.
    #[arg(long, value_name = "PRESENCE_KEY")]
    key: Option<String>,
    /// The status to track, a JSON object.
    #[arg(long, default_value = "{}", value_name = "JSON")]
    status: String,
    /// Print one JSON object per line (sync, join, leave) instead of redrawing a screen.
    #[arg(long)]
    json: bool,
    /// The serializer: 2.0.0 (realtime-js's default) or 1.0.0.
    #[arg(long, default_value = "2.0.0")]
    vsn: String,
}

/// How many joins and leaves the screen keeps.
const LOG_LINES: usize = 12;

/// Runs `headcount watch` until Ctrl-C (or SIGTERM), then leaves the channel.
pub(crate) fn run(args: WatchArgs) -> anyhow::Result<()> {
    let status: Value = serde_json::from_str(&args.status).context("--status is not JSON")?;
    anyhow::ensure!(status.is_object(), "--status must be a JSON object");
    let serializer = match args.vsn.as_str() {
        "1.0.0" => Serializer::V1,
        "2.0.0" => Serializer::V2,
        other => anyhow::bail!("--vsn must be 1.0.0 or 2.0.0, not {other}"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(watch(args, serializer, status))
}

/// The output: JSON lines, a redrawn screen, or plain lines.
enum Mode {
    Json,
    Screen,
    Lines,
}

struct View {
    mode: Mode,
    channel: String,
    endpoint: String,
    key: Option<String>,
    connection: ConnectionState,
    status: Option<StatusEvent>,
    state: PresenceState,
    log: VecDeque<String>,
}

async fn watch(args: WatchArgs, serializer: Serializer, status: Value) -> anyhow::Result<()> {
    let client = RealtimeClient::builder(&args.url, &args.apikey)
        .serializer(serializer)
        .connect()?;
    let options = ChannelOptions::default().presence_key(args.key.clone().unwrap_or_default());
    let presence = client
        .presence(&args.channel)
        .options(options)
        .user_status(status)
        .join()?;
    let mut events = presence.events();
    let mut statuses = presence.statuses();
    let mut connection = client.connection_state();
    let mode = if args.json {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Screen
    } else {
        Mode::Lines
    };
    let mut view = View {
        mode,
        channel: args.channel.clone(),
        endpoint: client.endpoint().to_owned(),
        key: args.key.clone(),
        connection: connection.borrow().clone(),
        status: None,
        state: PresenceState::default(),
        log: VecDeque::new(),
    };
    view.redraw()?;
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    let mut refused = None;
    loop {
        tokio::select! {
            () = &mut stop => break,
            event = events.recv() => match event {
                Ok(event) => view.on_presence(event)?,
                Err(RecvError::Lagged(missed)) => view.on_lagged(missed)?,
                Err(RecvError::Closed) => break,
            },
            status = statuses.recv() => match status {
                Ok(status) => view.on_status(status)?,
                // The statuses kept end with the latest, which is all the view shows.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            changed = connection.changed() => {
                if changed.is_err() {
                    break;
                }
                let state = connection.borrow_and_update().clone();
                refused = refusal(&state);
                view.on_connection(state)?;
                if refused.is_some() {
                    break;
                }
            }
        }
    }
    if refused.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), presence.leave()).await;
    }
    client.disconnect().await;
    if matches!(view.mode, Mode::Screen) {
        println!();
    }
    match refused {
        Some(reason) => anyhow::bail!("the server refused the connection: {reason}"),
        None => Ok(()),
    }
}

/// The server's reason when it refused the upgrade for good (401: the key is bad or expired;
/// 403: the origin or serializer is not allowed): trying again would only be refused again.
/// Other failures (a server not up yet, 429, a dropped network) are worth retrying.
fn refusal(state: &ConnectionState) -> Option<String> {
    let ConnectionState::Reconnecting {
        error: Some(error), ..
    } = state
    else {
        return None;
    };
    let body = error
        .strip_prefix("HTTP 401: ")
        .or_else(|| error.strip_prefix("HTTP 403: "))?;
    let reason = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| error.clone());
    Some(reason)
}

impl View {
    fn on_presence(&mut self, event: PresenceEvent) -> anyhow::Result<()> {
        match event {
            PresenceEvent::Join { key, current, new } => {
                if let Mode::Json = self.mode {
                    let fields = [
                        ("key", json!(key)),
                        ("current", json!(current)),
                        ("new", json!(new)),
                    ];
                    return emit_event("join", &fields);
                }
                self.push_log(format!("+ {key}  {}", statuses(&new)));
            }
            PresenceEvent::Leave { key, current, left } => {
                if let Mode::Json = self.mode {
                    let fields = [
                        ("key", json!(key)),
                        ("current", json!(current)),
                        ("left", json!(left)),
                    ];
                    return emit_event("leave", &fields);
                }
                self.push_log(format!("- {key}  {}", statuses(&left)));
            }
            PresenceEvent::Sync(state) => {
                self.state = state;
                if let Mode::Json = self.mode {
                    let fields = [
                        ("count", json!(self.state.count())),
                        ("state", json!(self.state)),
                    ];
                    return emit_event("sync", &fields);
                }
                if let Mode::Lines = self.mode {
                    return emit_text(&format!("{} present", self.state.count()));
                }
            }
        }
        self.redraw()
    }

    fn on_status(&mut self, status: StatusEvent) -> anyhow::Result<()> {
        let text = match &status.reason {
            Some(reason) => format!("channel {}: {} ({reason})", self.channel, status.status),
            None => format!("channel {}: {}", self.channel, status.status),
        };
        self.status = Some(status);
        match self.mode {
            Mode::Json => {
                eprintln!("{text}");
                Ok(())
            }
            Mode::Lines => emit_text(&text),
            Mode::Screen => self.redraw(),
        }
    }

    /// The presence stream fell behind and dropped `missed` events: the log has a gap (the
    /// state itself comes back whole with the next sync).
    fn on_lagged(&mut self, missed: u64) -> anyhow::Result<()> {
        let text = format!("missed {missed} presence events");
        match self.mode {
            Mode::Json => {
                eprintln!("{text}");
                Ok(())
            }
            Mode::Lines | Mode::Screen => {
                self.push_log(text);
                Ok(())
            }
        }
    }

    fn on_connection(&mut self, state: ConnectionState) -> anyhow::Result<()> {
        let text = format!("connection: {}", describe(&state));
        self.connection = state;
        match self.mode {
            Mode::Json => {
                eprintln!("{text}");
                Ok(())
            }
            Mode::Lines => emit_text(&text),
            Mode::Screen => self.redraw(),
        }
    }

    fn push_log(&mut self, line: String) {
        if let Mode::Lines = self.mode {
            let _ = emit_text(&line);
        }
        self.log.push_front(format!("{}  {line}", clock()));
        self.log.truncate(LOG_LINES);
    }

    fn redraw(&self) -> anyhow::Result<()> {
        let Mode::Screen = self.mode else {
            return Ok(());
        };
        let mut out = String::new();
        out.push_str("\x1b[H\x1b[2J");
        out.push_str(&format!(
            "headcount watch  {}  ({})\n",
            self.channel, self.endpoint
        ));
        let channel = self
            .status
            .as_ref()
            .map_or("joining".to_owned(), |s| match &s.reason {
                Some(r) => format!("{} ({r})", s.status),
                None => s.status.to_string(),
            });
        out.push_str(&format!(
            "connection: {}   channel: {channel}   you: {}\n\n",
            describe(&self.connection),
            self.key.as_deref().unwrap_or("(a key the server picks)")
        ));
        out.push_str(&format!("{} present\n", self.state.count()));
        let width = self.state.keys().map(str::len).max().unwrap_or(0);
        for (key, metas) in self.state.iter() {
            let me = if self.key.as_deref() == Some(key) {
                "*"
            } else {
                " "
            };
            let extra = if metas.len() > 1 {
                format!("  ({} connections)", metas.len())
            } else {
                String::new()
            };
            out.push_str(&format!(" {me} {key:width$}  {}{extra}\n", statuses(metas)));
        }
        out.push_str("\nrecent joins and leaves\n");
        for line in &self.log {
            out.push_str(&format!("  {line}\n"));
        }
        out.push_str("\nCtrl-C to leave\n");
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        Ok(())
    }
}

/// The statuses of a key's presences, as compact JSON (without `presence_ref`).
fn statuses(metas: &[PresenceMeta]) -> String {
    metas
        .iter()
        .map(|m| Value::Object(m.payload.clone()).to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe(state: &ConnectionState) -> String {
    match state {
        ConnectionState::Connecting => "connecting".into(),
        ConnectionState::Open => "open".into(),
        ConnectionState::Reconnecting { attempt, error } => match error {
            Some(e) => format!("reconnecting (attempt {attempt}: {e})"),
            None => format!("reconnecting (attempt {attempt})"),
        },
        ConnectionState::Closed => "closed".into(),
    }
}

/// `HH:MM:SS` UTC.
fn clock() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

/// One JSON line with `event` first, then `fields` in order (easier to read than sorted keys).
fn emit_event(event: &str, fields: &[(&str, Value)]) -> anyhow::Result<()> {
    let mut line = format!("{{\"event\":{}", json!(event));
    for (name, value) in fields {
        line.push_str(&format!(",{}:{value}", json!(name)));
    }
    line.push('}');
    emit_text(&line)
}

fn emit_text(line: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}
