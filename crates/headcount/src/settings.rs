//! `headcount serve`'s settings: flags, environment variables and a TOML file, in that order of
//! precedence, over the defaults.
//!
//! Every setting has one name, used three ways: the flag `--max-channels-per-client`, the
//! environment variable `HEADCOUNT_MAX_CHANNELS_PER_CLIENT`, and the file key
//! `max_channels_per_client`. `docs/configuration.md` lists them all with their defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use headcount_server::Config;
use headcount_server::auth::{REDACTED, Verifier};
use headcount_server::config::Limits;
use headcount_server::policy::Policy;
use serde::{Deserialize, Serialize};

/// Every setting of `headcount serve`; `None` means "not given here".
#[derive(Args, Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// The address to listen on [default: 127.0.0.1:4000].
    #[arg(long, env = "HEADCOUNT_BIND")]
    pub bind: Option<SocketAddr>,
    /// The secret that signs JWTs (HS256/384/512). Without one, a secret is generated and the
    /// keys signed with it are printed.
    #[arg(
        long,
        env = "HEADCOUNT_JWT_SECRET",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub jwt_secret: Option<String>,
    /// A JWKS file (`{"keys":[...]}`) with the public keys of RS/ES/EdDSA tokens, chosen by `kid`.
    #[arg(long, env = "HEADCOUNT_JWKS_FILE", value_name = "FILE")]
    pub jwks_file: Option<PathBuf>,
    /// The authorization rules of private channels (TOML). Without it, private channels are refused.
    #[arg(long, env = "HEADCOUNT_POLICY_FILE", value_name = "FILE")]
    pub policy_file: Option<PathBuf>,
    /// Only let members track themselves under their token's `sub` [default: false].
    #[arg(long, env = "HEADCOUNT_STRICT_PRESENCE", num_args = 0..=1, default_missing_value = "true")]
    pub strict_presence: Option<bool>,
    /// Origins allowed to open sockets, comma-separated (empty: any) [default: any].
    #[arg(long, env = "HEADCOUNT_ALLOWED_ORIGINS", value_delimiter = ',', num_args = 0..)]
    pub allowed_origins: Option<Vec<String>>,
    /// Close sockets that send nothing for this many seconds [default: 60].
    #[arg(long, env = "HEADCOUNT_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,
    /// Close sockets that have no channel joined for this many seconds [default: 60].
    #[arg(long, env = "HEADCOUNT_UNJOINED_TIMEOUT", value_name = "SECONDS")]
    pub unjoined_timeout: Option<u64>,
    /// Seconds to wait for an HTTP request's headers (slowloris guard) [default: 10].
    #[arg(long, env = "HEADCOUNT_HEADER_READ_TIMEOUT", value_name = "SECONDS")]
    pub header_read_timeout: Option<u64>,
    /// On SIGTERM, seconds to let sockets finish after telling them to go [default: 5].
    #[arg(long, env = "HEADCOUNT_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,
    /// The largest WebSocket frame accepted, in bytes [default: 5000000].
    #[arg(long, env = "HEADCOUNT_MAX_FRAME_SIZE", value_name = "BYTES")]
    pub max_frame_size: Option<usize>,
    /// The largest WebSocket message accepted, in bytes [default: 5000000].
    #[arg(long, env = "HEADCOUNT_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// Bytes waiting that cut a socket as a slow consumer when nothing is written to it for a
    /// whole tick [default: 1048576].
    #[arg(long, env = "HEADCOUNT_OUTBOX_LIMIT", value_name = "BYTES")]
    pub outbox_limit: Option<usize>,
    /// Bytes that may wait behind the frame being written, whatever the socket's progress; at
    /// least the largest message plus 64 KiB [default: 67108864].
    #[arg(long, env = "HEADCOUNT_OUTBOX_HARD_LIMIT", value_name = "BYTES")]
    pub outbox_hard_limit: Option<usize>,
    /// Seconds a client message (fragments or one frame) may take to arrive completely
    /// [default: 30].
    #[arg(
        long,
        env = "HEADCOUNT_INCOMPLETE_MESSAGE_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub incomplete_message_timeout: Option<u64>,
    /// Bytes of partially received messages across all sockets; new large messages past it are
    /// refused [default: 268435456].
    #[arg(long, env = "HEADCOUNT_MAX_BUFFERED_INPUT", value_name = "BYTES")]
    pub max_buffered_input: Option<usize>,
    /// The longest presence key accepted in a join, in bytes [default: 1024].
    #[arg(long, env = "HEADCOUNT_MAX_PRESENCE_KEY_LENGTH", value_name = "BYTES")]
    pub max_presence_key_length: Option<usize>,
    /// Bytes of tracked presence (keys and payloads) one socket may hold across its channels
    /// [default: 10000000].
    #[arg(
        long,
        env = "HEADCOUNT_MAX_PRESENCE_BYTES_PER_CLIENT",
        value_name = "BYTES"
    )]
    pub max_presence_bytes_per_client: Option<usize>,
    /// Channels one socket may join [default: 100].
    #[arg(long, env = "HEADCOUNT_MAX_CHANNELS_PER_CLIENT")]
    pub max_channels_per_client: Option<usize>,
    /// Sockets with a channel joined, node-wide; 0 means no limit [default: 0].
    #[arg(long, env = "HEADCOUNT_MAX_CONCURRENT_USERS")]
    pub max_concurrent_users: Option<usize>,
    /// Joins per second, node-wide; 0 means no limit [default: 0].
    #[arg(long, env = "HEADCOUNT_MAX_JOINS_PER_SECOND")]
    pub max_joins_per_second: Option<u32>,
    /// Client broadcasts per second, node-wide; 0 means no limit [default: 0].
    #[arg(long, env = "HEADCOUNT_MAX_EVENTS_PER_SECOND")]
    pub max_events_per_second: Option<u32>,
    /// Presence calls per second, node-wide; 0 means no limit [default: 0].
    #[arg(long, env = "HEADCOUNT_MAX_PRESENCE_EVENTS_PER_SECOND")]
    pub max_presence_events_per_second: Option<u32>,
    /// Joins per second one socket may make; 0 means a quarter of the node-wide limit
    /// [default: 0].
    #[arg(long, env = "HEADCOUNT_MAX_CLIENT_JOINS_PER_SECOND")]
    pub max_client_joins_per_second: Option<u32>,
    /// Broadcasts per second one socket or HTTP client may send; 0 means a quarter of the
    /// node-wide limit [default: 0].
    #[arg(long, env = "HEADCOUNT_MAX_CLIENT_EVENTS_PER_SECOND")]
    pub max_client_events_per_second: Option<u32>,
    /// Presence tracks per second one socket may make; 0 means a quarter of the node-wide
    /// limit [default: 0].
    #[arg(long, env = "HEADCOUNT_MAX_CLIENT_PRESENCE_EVENTS_PER_SECOND")]
    pub max_client_presence_events_per_second: Option<u32>,
    /// Presence calls one member may make per window [default: 5].
    #[arg(long, env = "HEADCOUNT_CLIENT_PRESENCE_MAX_CALLS")]
    pub client_presence_max_calls: Option<u32>,
    /// The client presence window, in seconds [default: 30].
    #[arg(long, env = "HEADCOUNT_CLIENT_PRESENCE_WINDOW", value_name = "SECONDS")]
    pub client_presence_window: Option<u64>,
    /// The largest broadcast or tracked payload, in kilobytes of 1,000 bytes [default: 3000].
    #[arg(long, env = "HEADCOUNT_MAX_PAYLOAD_SIZE_KB", value_name = "KB")]
    pub max_payload_size_kb: Option<usize>,
    /// The longest channel name (without `realtime:`) a join or HTTP broadcast may use, in
    /// bytes [default: 1024].
    #[arg(long, env = "HEADCOUNT_MAX_TOPIC_BYTES", value_name = "BYTES")]
    pub max_topic_bytes: Option<usize>,
    /// Messages one HTTP batch broadcast may carry [default: 100].
    #[arg(long, env = "HEADCOUNT_MAX_BATCH_MESSAGES")]
    pub max_batch_messages: Option<usize>,
    /// The largest HTTP batch broadcast body, in bytes (never below the payload limit plus
    /// 64 KiB) [default: 5000000].
    #[arg(long, env = "HEADCOUNT_MAX_BATCH_BODY_BYTES", value_name = "BYTES")]
    pub max_batch_body_bytes: Option<usize>,
    /// Merge the presence diffs of a busy channel over this many milliseconds (0: send each at
    /// once) [default: 50].
    #[arg(
        long,
        env = "HEADCOUNT_PRESENCE_WINDOW_MS",
        value_name = "MILLISECONDS"
    )]
    pub presence_window_ms: Option<u64>,
    /// Channels with fewer members send every presence change at once, as Supabase does; larger
    /// ones coalesce over `presence_window_ms`. 0 coalesces every channel [default: 100].
    #[arg(
        long = "presence-coalesce-members",
        env = "HEADCOUNT_PRESENCE_COALESCE_MEMBERS",
        value_name = "MEMBERS"
    )]
    pub presence_coalesce_members: Option<usize>,
    /// Share presence and broadcast with other nodes through this Redis (`redis://HOST:PORT`).
    #[arg(
        long = "redis",
        env = "HEADCOUNT_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
    /// In cluster mode, how long a crashed node's presences may outlive it, in seconds [default: 10].
    #[arg(long, env = "HEADCOUNT_NODE_TIMEOUT", value_name = "SECONDS")]
    pub node_timeout: Option<u64>,
    /// In cluster mode, bytes of broadcasts a node may hold for Redis before it drops more
    /// (at least twice the largest payload) [default: 16777216].
    #[arg(long, env = "HEADCOUNT_REDIS_QUEUE_BYTES", value_name = "BYTES")]
    pub redis_queue_bytes: Option<usize>,
    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "HEADCOUNT_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// How logs are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

macro_rules! merge {
    ($into:ident, $from:ident: $($field:ident),+ $(,)?) => {
        $( if $into.$field.is_none() { $into.$field = $from.$field.clone(); } )+
    };
}

impl Settings {
    /// Fills whatever is still unset from `lower` (a lower-precedence source).
    pub(crate) fn or(mut self, lower: &Settings) -> Settings {
        merge!(self, lower: bind, jwt_secret, jwks_file, policy_file, strict_presence, allowed_origins,
            idle_timeout, unjoined_timeout, header_read_timeout, shutdown_grace, max_frame_size,
            max_message_size, outbox_limit, outbox_hard_limit, incomplete_message_timeout,
            max_buffered_input, max_presence_key_length, max_presence_bytes_per_client,
            max_channels_per_client, max_concurrent_users,
            max_joins_per_second, max_events_per_second, max_presence_events_per_second,
            max_client_joins_per_second, max_client_events_per_second,
            max_client_presence_events_per_second,
            client_presence_max_calls, client_presence_window, max_payload_size_kb, presence_window_ms, presence_coalesce_members, redis_url,
            node_timeout, redis_queue_bytes, log_format);
        merge!(self, lower: max_topic_bytes, max_batch_messages, max_batch_body_bytes);
        self
    }

    /// Reads a TOML settings file.
    pub(crate) fn from_file(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid settings in {}", path.display()))
    }

    /// The defaults, written out.
    pub(crate) fn defaults() -> Settings {
        let limits = Limits::default();
        Settings {
            bind: Some("127.0.0.1:4000".parse().expect("a valid address")),
            jwt_secret: None,
            jwks_file: None,
            policy_file: None,
            strict_presence: Some(false),
            allowed_origins: Some(Vec::new()),
            idle_timeout: Some(60),
            unjoined_timeout: Some(60),
            header_read_timeout: Some(10),
            shutdown_grace: Some(5),
            max_frame_size: Some(5_000_000),
            max_message_size: Some(5_000_000),
            outbox_limit: Some(1 << 20),
            outbox_hard_limit: Some(64 << 20),
            incomplete_message_timeout: Some(30),
            max_buffered_input: Some(256 << 20),
            max_presence_key_length: Some(1024),
            max_presence_bytes_per_client: Some(10_000_000),
            max_channels_per_client: Some(limits.max_channels_per_client),
            max_concurrent_users: Some(0),
            max_joins_per_second: Some(0),
            max_events_per_second: Some(0),
            max_presence_events_per_second: Some(0),
            max_client_joins_per_second: Some(0),
            max_client_events_per_second: Some(0),
            max_client_presence_events_per_second: Some(0),
            client_presence_max_calls: Some(limits.client_presence_max_calls),
            client_presence_window: Some(limits.client_presence_window.as_secs()),
            max_payload_size_kb: Some(limits.max_payload_size_kb),
            max_topic_bytes: Some(limits.max_topic_bytes),
            max_batch_messages: Some(limits.max_batch_messages),
            max_batch_body_bytes: Some(limits.max_batch_body_bytes),
            presence_window_ms: Some(50),
            presence_coalesce_members: Some(100),
            redis_url: None,
            node_timeout: Some(10),
            redis_queue_bytes: Some(headcount_redis::DEFAULT_QUEUE_BYTES),
            log_format: Some(LogFormat::Text),
        }
    }

    /// The settings as TOML, secrets redacted (for `--print-config`).
    pub(crate) fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.jwt_secret.is_some() {
            shown.jwt_secret = Some(REDACTED.into());
        }
        if let Some(url) = &shown.redis_url {
            shown.redis_url = Some(redact_url(url));
        }
        toml::to_string(&shown).expect("settings always serialize")
    }

    /// The server configuration these (complete) settings describe. `secret` is the JWT secret
    /// to use (given or generated).
    pub(crate) fn to_config(&self, secret: &str) -> anyhow::Result<Config> {
        let mut config = Config::new(secret);
        if let Some(path) = &self.jwks_file {
            let jwks = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            config.verifier = Verifier::with_jwks(secret, &jwks).map_err(anyhow::Error::msg)?;
        }
        if let Some(path) = &self.policy_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            config.policy =
                Policy::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
        }
        let secs = |v: Option<u64>| Duration::from_secs(v.expect("complete settings"));
        let off_if_zero = |v: Option<u32>| v.filter(|n| *n > 0);
        config.strict_presence = self.strict_presence.unwrap_or(false);
        config.allowed_origins = self.allowed_origins.clone().unwrap_or_default();
        config.idle_timeout = secs(self.idle_timeout);
        config.unjoined_timeout = secs(self.unjoined_timeout);
        config.header_read_timeout = secs(self.header_read_timeout);
        config.shutdown_grace = secs(self.shutdown_grace);
        config.max_frame_size = self.max_frame_size.expect("complete settings");
        config.max_message_size = self.max_message_size.expect("complete settings");
        config.outbox_limit = self.outbox_limit.expect("complete settings");
        config.outbox_hard_limit = self.outbox_hard_limit.expect("complete settings");
        config.incomplete_message_timeout = secs(self.incomplete_message_timeout);
        config.max_buffered_input = self.max_buffered_input.expect("complete settings");
        config.max_presence_key_length = self.max_presence_key_length.expect("complete settings");
        config.max_presence_bytes_per_client = self
            .max_presence_bytes_per_client
            .expect("complete settings");
        config.limits = Limits {
            max_channels_per_client: self.max_channels_per_client.expect("complete settings"),
            max_concurrent_users: self.max_concurrent_users.filter(|n| *n > 0),
            max_joins_per_second: off_if_zero(self.max_joins_per_second),
            max_events_per_second: off_if_zero(self.max_events_per_second),
            max_presence_events_per_second: off_if_zero(self.max_presence_events_per_second),
            client_presence_max_calls: self.client_presence_max_calls.expect("complete settings"),
            client_presence_window: secs(self.client_presence_window),
            max_payload_size_kb: self.max_payload_size_kb.expect("complete settings"),
            // 0: derived from the node-wide limit (see `Limits::client_joins_per_second`).
            max_client_joins_per_second: off_if_zero(self.max_client_joins_per_second),
            max_client_events_per_second: off_if_zero(self.max_client_events_per_second),
            max_client_presence_events_per_second: off_if_zero(
                self.max_client_presence_events_per_second,
            ),
            max_topic_bytes: self.max_topic_bytes.expect("complete settings"),
            max_batch_messages: self.max_batch_messages.expect("complete settings"),
            max_batch_body_bytes: self.max_batch_body_bytes.expect("complete settings"),
        };
        config.presence_window =
            Duration::from_millis(self.presence_window_ms.expect("complete settings"));
        config.presence_coalesce_members =
            self.presence_coalesce_members.expect("complete settings");
        if config.limits.max_topic_bytes == 0 || config.limits.max_batch_messages == 0 {
            bail!("max_topic_bytes and max_batch_messages must be at least 1");
        }
        if config.max_message_size < config.max_frame_size {
            bail!(
                "max_message_size ({}) is below max_frame_size ({})",
                config.max_message_size,
                config.max_frame_size
            );
        }
        config.check_outbox()?;
        Ok(config)
    }
}

/// A URL with every credential replaced by `<redacted>`: the userinfo's password
/// (`redis://user:pw@host`, `redis://:pw@host`; a userinfo with no `:` is redacted whole, as some
/// clients take it for a password) and every query parameter that can carry one
/// (`redis+unix:///run/redis.sock?pass=pw`, `?password=`, `?token=`, ...). When in doubt it
/// redacts more, never less: a password holding `@` or `?` unescaped stays hidden.
pub(crate) fn redact_url(url: &str) -> String {
    const SECRET_PARAMS: [&str; 11] = [
        "pass",
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "auth",
        "key",
        "apikey",
        "api_key",
        "access_token",
    ];
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let (mut out, rest) = match url.rfind('@').filter(|at| *at >= after_scheme) {
        Some(at) if after_scheme > 0 => {
            let creds = &url[after_scheme..at];
            let shown = match creds.split_once(':') {
                Some((user, _)) => format!("{user}:{REDACTED}"),
                None => REDACTED.to_owned(),
            };
            (format!("{}{shown}", &url[..after_scheme]), &url[at..])
        }
        _ => (String::new(), url),
    };
    let Some((path, query)) = rest.split_once('?') else {
        out.push_str(rest);
        return out;
    };
    out.push_str(path);
    out.push('?');
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if SECRET_PARAMS.contains(&name.to_ascii_lowercase().as_str()) => {
                format!("{name}={REDACTED}")
            }
            _ => param.to_owned(),
        })
        .collect();
    out.push_str(&params.join("&"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let flags = Settings {
            idle_timeout: Some(5),
            ..Default::default()
        };
        let file: Settings =
            toml::from_str("idle_timeout = 9\nmax_channels_per_client = 7\n").unwrap();
        let s = flags.or(&file).or(&Settings::defaults());
        assert_eq!(
            (
                s.idle_timeout,
                s.max_channels_per_client,
                s.unjoined_timeout
            ),
            (Some(5), Some(7), Some(60))
        );
        let config = s.to_config("secret").unwrap();
        assert_eq!(config.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.limits.max_channels_per_client, 7);
        assert_eq!(config.limits.max_joins_per_second, None, "0 means off");
    }

    #[test]
    fn per_client_rates_default_to_a_quarter_of_the_node() {
        let flags = Settings {
            max_joins_per_second: Some(20),
            max_events_per_second: Some(3),
            max_client_presence_events_per_second: Some(7),
            ..Default::default()
        };
        let config = flags.or(&Settings::defaults()).to_config("s").unwrap();
        let limits = &config.limits;
        assert_eq!(limits.client_joins_per_second(), Some(5));
        assert_eq!(limits.client_events_per_second(), Some(1), "rounded up");
        assert_eq!(
            limits.client_presence_events_per_second(),
            Some(7),
            "an explicit value wins, even without a node-wide limit"
        );
        let defaults = Settings::defaults().to_config("s").unwrap();
        assert_eq!(
            defaults.limits.client_events_per_second(),
            None,
            "no node-wide limit, no derived client limit"
        );
    }

    #[test]
    fn the_topic_and_batch_limits_are_settings() {
        let file: Settings = toml::from_str(
            "max_topic_bytes = 64\nmax_batch_messages = 10\nmax_batch_body_bytes = 9000000\n",
        )
        .unwrap();
        let config = file.or(&Settings::defaults()).to_config("secret").unwrap();
        assert_eq!(
            (
                config.limits.max_topic_bytes,
                config.limits.max_batch_messages,
                config.limits.max_batch_body_bytes
            ),
            (64, 10, 9_000_000)
        );
        for zero in ["max_topic_bytes = 0", "max_batch_messages = 0"] {
            let file: Settings = toml::from_str(zero).unwrap();
            assert!(
                file.or(&Settings::defaults()).to_config("secret").is_err(),
                "{zero} would refuse every join or batch"
            );
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<Settings>("idle_timeot = 9").is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Settings {
            jwt_secret: Some("hunter2".into()),
            redis_url: Some("redis://me:pw@127.0.0.1:6379".into()),
            ..Settings::defaults()
        };
        let shown = s.to_redacted_toml();
        assert!(
            !shown.contains("hunter2") && !shown.contains(":pw@"),
            "{shown}"
        );
        assert!(
            shown.contains("redis://me:<redacted>@127.0.0.1:6379"),
            "{shown}"
        );
    }

    #[test]
    fn every_credential_form_in_a_url_is_redacted() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://me:pw@h:6379/0", "redis://me:<redacted>@h:6379/0"),
            ("rediss://:pw@h", "rediss://:<redacted>@h"),
            ("redis://pw@h", "redis://<redacted>@h"),
            ("redis://me:p@w/x?@h", "redis://me:<redacted>@h"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=pw",
                "redis+unix:///run/redis.sock?db=1&pass=<redacted>",
            ),
            (
                "unix:///run/redis.sock?Password=pw&user=me",
                "unix:///run/redis.sock?Password=<redacted>&user=me",
            ),
            (
                "redis://h?token=pw&auth=pw&pwd=pw",
                "redis://h?token=<redacted>&auth=<redacted>&pwd=<redacted>",
            ),
            (
                "postgres://u:pw@db/app?sslmode=require",
                "postgres://u:<redacted>@db/app?sslmode=require",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn the_defaults_are_the_server_defaults() {
        let config = Settings::defaults().to_config("s").unwrap();
        let server = Config::new("s");
        assert_eq!(config.limits, server.limits);
        assert_eq!(
            (
                config.idle_timeout,
                config.unjoined_timeout,
                config.max_frame_size,
                config.outbox_limit
            ),
            (
                server.idle_timeout,
                server.unjoined_timeout,
                server.max_frame_size,
                server.outbox_limit
            )
        );
        assert_eq!(
            (
                config.outbox_hard_limit,
                config.incomplete_message_timeout,
                config.max_buffered_input,
                config.max_presence_key_length,
                config.max_presence_bytes_per_client
            ),
            (
                server.outbox_hard_limit,
                server.incomplete_message_timeout,
                server.max_buffered_input,
                server.max_presence_key_length,
                server.max_presence_bytes_per_client
            )
        );
    }

    #[test]
    fn an_outbox_cap_below_a_legal_message_is_refused() {
        // The largest legal message is max_message_size (5,000,000 B); plus 64 KiB of envelope.
        let need = 5_000_000 + 64 * 1024;
        let at = |hard: usize| Settings {
            outbox_hard_limit: Some(hard),
            ..Settings::defaults()
        };
        assert!(at(need).to_config("s").is_ok());
        let err = at(need - 1).to_config("s").unwrap_err().to_string();
        assert!(err.contains("outbox_hard_limit (5065535)"), "{err}");
    }
}
