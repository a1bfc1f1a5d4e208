//! Presence in a room, the way the `RealtimePresence` component does it.
//!
//! ```text
//! headcount serve --jwt-secret <secret>          # prints an anon key
//! cargo run -p headcount-client --example presence -- http://127.0.0.1:4000 <anon key> room alice
//! ```
//!
//! It joins `room` as `alice` with `{"status": "online"}`, prints every join, leave and sync,
//! switches to `{"status": "away"}` after ten seconds, and leaves on Ctrl-C. Run it twice (or
//! beside `headcount watch room`) to see the others come and go.

use std::time::Duration;

use headcount_client::{PresenceEvent, RealtimeClient, RecvError};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(apikey)) = (args.next(), args.next()) else {
        eprintln!("usage: presence URL APIKEY [CHANNEL] [NAME]");
        std::process::exit(2);
    };
    let channel = args
        .next()
        .unwrap_or_else(|| headcount_client::DEFAULT_CHANNEL.to_owned());
    let name = args.next().unwrap_or_else(|| "rustacean".to_owned());

    let client = RealtimeClient::connect(&url, &apikey)?;
    let presence = client
        .presence(&channel)
        .key(&name)
        .user_status(json!({"status": "online"}))
        .join()?;
    let mut events = presence.events();
    let mut statuses = presence.statuses();
    let away = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(away);

    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = &mut away, if !away.is_elapsed() => {
                presence.update_status(json!({"status": "away"})).await?;
                println!("you are away now");
            }
            Ok(status) = statuses.recv() => {
                println!("channel {}: {}", presence.name(), status.status);
                if let Some(error) = presence.error() {
                    println!("  error: {error}");
                }
            }
            event = events.recv() => match event {
                Ok(PresenceEvent::Join { key, new, .. }) => println!("+ {key} {:?}", new[0].payload),
                Ok(PresenceEvent::Leave { key, left, .. }) => println!("- {key} {:?}", left[0].payload),
                Ok(PresenceEvent::Sync(state)) => {
                    let people: Vec<&str> = state.keys().collect();
                    println!("{} present: {}", state.count(), people.join(", "));
                }
                // Too slow to keep up: the next sync has the whole state again.
                Err(RecvError::Lagged(missed)) => println!("(missed {missed} events)"),
                Err(RecvError::Closed) => break,
            },
        }
    }
    presence.leave().await?;
    client.disconnect().await;
    Ok(())
}
