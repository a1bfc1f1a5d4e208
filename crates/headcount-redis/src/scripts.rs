//! The Lua scripts: every change to a channel's presence goes through [`SET`] or [`REAP`], which
//! change the hash, bump the sequence number and publish the change in one atomic step. Each
//! script touches the keys of one hash tag only (one channel, or one node), so it runs unchanged
//! on Redis Cluster.
//!
//! An entry's JSON always starts with `{"epoch":N,`: the scripts read the epoch without decoding
//! the rest (see [`crate::wire`]).

use redis::Script;

/// Sets or removes one owner's entry in one channel.
pub const SET: &str = r#"
-- Sets or removes one owner's presence entry in one channel, and publishes the change.
-- KEYS[1]  the channel's presence hash (field: owner id, value: entry JSON)
-- KEYS[2]  the channel's sequence number
-- ARGV[1]  the channel's pub/sub channel
-- ARGV[2]  the origin node id
-- ARGV[3]  the owner id ("<node>:<member>")
-- ARGV[4]  the entry JSON (starting with {"epoch":N,), or "" to remove the entry
-- ARGV[5]  the writer's epoch: a write from an older epoch than the stored entry's is stale
-- ARGV[6]  how long (ms) the sequence number outlives the last entry of the channel
-- Returns the new sequence number, or 0 when nothing visible changed.
local function epoch_of(v)
  return tonumber(string.match(v, '^{"epoch":(%d+),')) or 0
end
local function body_of(v)
  return string.sub(v, (string.find(v, ',', 1, true) or 0) + 1)
end
local old = redis.call('HGET', KEYS[1], ARGV[3])
local new = ARGV[4]
if old and epoch_of(old) > tonumber(ARGV[5]) then
  return 0
end
if new == '' then
  if not old then return 0 end
  redis.call('HDEL', KEYS[1], ARGV[3])
else
  if old and body_of(old) == body_of(new) then
    if old ~= new then redis.call('HSET', KEYS[1], ARGV[3], new) end
    return 0
  end
  redis.call('HSET', KEYS[1], ARGV[3], new)
end
local seq = redis.call('INCR', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
else
  redis.call('PERSIST', KEYS[2])
end
redis.call('PUBLISH', ARGV[1], '{"t":"p","seq":' .. seq .. ',"node":' .. cjson.encode(ARGV[2]) ..
  ',"owner":' .. cjson.encode(ARGV[3]) .. '}\n' .. new)
return seq
"#;

/// Removes every entry of one node in one channel.
pub const REAP: &str = r#"
-- Removes the entries one node owns in one channel, up to an epoch, publishing each leave.
-- KEYS[1]  the channel's presence hash
-- KEYS[2]  the channel's sequence number
-- ARGV[1]  the channel's pub/sub channel
-- ARGV[2]  the node whose entries go
-- ARGV[3]  the highest epoch to remove (what the node wrote after it came back stays)
-- ARGV[4]  how long (ms) the sequence number outlives the last entry of the channel
-- Returns how many entries were removed.
local prefix = ARGV[2] .. ':'
local max = tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
local removed = 0
for i = 1, #all, 2 do
  local owner, value = all[i], all[i + 1]
  if string.sub(owner, 1, #prefix) == prefix then
    local epoch = tonumber(string.match(value, '^{"epoch":(%d+),')) or 0
    if epoch <= max then
      redis.call('HDEL', KEYS[1], owner)
      local seq = redis.call('INCR', KEYS[2])
      redis.call('PUBLISH', ARGV[1], '{"t":"p","seq":' .. seq .. ',"node":' ..
        cjson.encode(ARGV[2]) .. ',"owner":' .. cjson.encode(owner) .. '}\n')
      removed = removed + 1
    end
  end
end
if removed > 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return removed
"#;

/// Reads a channel's presence and sequence number together.
pub const SNAPSHOT: &str = r#"
-- Reads one channel's presence and sequence number at the same instant.
-- KEYS[1]  the channel's presence hash
-- KEYS[2]  the channel's sequence number
-- Returns {seq, owner1, entry1, owner2, entry2, ...} (seq 0 when the channel has none).
local seq = tonumber(redis.call('GET', KEYS[2])) or 0
local all = redis.call('HGETALL', KEYS[1])
table.insert(all, 1, seq)
return all
"#;

/// Refreshes a node's heartbeat.
pub const HEARTBEAT: &str = r#"
-- Refreshes a node's heartbeat, and notices when the node had been given up for dead.
-- KEYS[1]  the node's heartbeat key (it expires when the node stops refreshing it)
-- KEYS[2]  the node's epoch (bumped each time the heartbeat is found missing)
-- ARGV[1]  the heartbeat's lifetime in milliseconds
-- ARGV[2]  what the heartbeat key holds (for operators)
-- Returns {came_back, epoch}: came_back is 1 when the heartbeat was missing (a new node, or
-- one that others may be reaping: what it writes from now on carries the new epoch).
local back = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  back = 1
  redis.call('INCR', KEYS[2])
  redis.call('PERSIST', KEYS[2])
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
return {back, tonumber(redis.call('GET', KEYS[2]))}
"#;

/// Takes the lock to reap a node whose heartbeat expired.
pub const TRY_REAP: &str = r#"
-- Takes the lock to reap a node, if its heartbeat expired and nobody else holds the lock.
-- KEYS[1]  the node's heartbeat key
-- KEYS[2]  the node's epoch
-- KEYS[3]  the node's reap lock
-- ARGV[1]  the reaper's node id (the lock's value)
-- ARGV[2]  the lock's lifetime in milliseconds
-- Returns the epoch to reap up to, or -1 when the node is alive or the lock is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
return tonumber(redis.call('GET', KEYS[2])) or 0
"#;

/// Ends a reap: drops the dead node's index unless it came back meanwhile.
pub const FINISH_REAP: &str = r#"
-- Ends the reaping of a node: releases the lock and, unless the node came back meanwhile,
-- drops its channel index and lets its epoch expire.
-- KEYS[1]  the node's heartbeat key
-- KEYS[2]  the node's epoch
-- KEYS[3]  the node's channel index
-- KEYS[4]  the node's reap lock
-- ARGV[1]  the reaper's node id
-- ARGV[2]  how long (ms) the epoch is kept after the node is gone
-- Returns 1 when the node is gone for good, 0 when it came back.
if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"#;

/// The scripts, with their SHA1s computed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    /// [`SET`].
    pub set: Script,
    /// [`REAP`].
    pub reap: Script,
    /// [`SNAPSHOT`].
    pub snapshot: Script,
    /// [`HEARTBEAT`].
    pub heartbeat: Script,
    /// [`TRY_REAP`].
    pub try_reap: Script,
    /// [`FINISH_REAP`].
    pub finish_reap: Script,
}

impl Scripts {
    /// Every script.
    pub(crate) fn new() -> Scripts {
        Scripts {
            set: Script::new(SET),
            reap: Script::new(REAP),
            snapshot: Script::new(SNAPSHOT),
            heartbeat: Script::new(HEARTBEAT),
            try_reap: Script::new(TRY_REAP),
            finish_reap: Script::new(FINISH_REAP),
        }
    }

    /// The sources, to load on a new connection.
    pub(crate) fn sources() -> [&'static str; 6] {
        [SET, REAP, SNAPSHOT, HEARTBEAT, TRY_REAP, FINISH_REAP]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_opens_with_its_keys_and_argv() {
        for src in Scripts::sources() {
            let header: Vec<&str> = src
                .trim_start()
                .lines()
                .take_while(|l| l.starts_with("--"))
                .collect();
            assert!(header.len() >= 3, "a header comment: {src}");
            assert!(header.iter().any(|l| l.starts_with("-- KEYS[1]")), "{src}");
            assert!(header.iter().any(|l| l.starts_with("-- Returns")), "{src}");
        }
    }
}
