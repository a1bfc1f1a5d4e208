// Factories for the official clients, pointed at a headcount server, plus small observers.
//
// Every client made here is closed at teardown (the `scope` argument is a test context or a
// function that registers a teardown callback).

import WebSocket from 'ws';
import { createClient } from '@supabase/supabase-js';
import { RealtimeClient } from '@supabase/realtime-js';
import { Socket as PhoenixSocket } from 'phoenix';
import { waitFor, withTimeout, DEFAULT_TIMEOUT_MS } from './wait.mjs';

const onTeardown = (scope, fn) => (typeof scope === 'function' ? scope(fn) : scope.after(fn));

/**
 * What crossed the wire for one client: every frame sent and received through the sockets of
 * a {@link recordingTransport}. Text frames are strings; binary frames are Buffers.
 */
export class WireLog {
  constructor() {
    this.frames = [];
    this.sockets = [];
    /** One entry per socket attempt: `{ createdAt, opened, closedAt, code, reason }`. */
    this.connections = [];
  }

  /** The socket the client uses now (the last one it opened). */
  get socket() {
    return this.sockets[this.sockets.length - 1];
  }

  sent() {
    return this.frames.filter((f) => f.dir === 'out');
  }

  received() {
    return this.frames.filter((f) => f.dir === 'in');
  }

  /** A readable dump for failure messages. */
  dump(limit = 40) {
    return this.frames
      .slice(-limit)
      .map((f) => `${f.dir === 'out' ? '→' : '←'} ${f.binary ? `(binary) ${f.data.toString('hex')}` : f.data}`)
      .join('\n');
  }
}

/**
 * A `ws` WebSocket class to hand to a client as its `transport`: it behaves exactly like
 * `ws` and also records every frame in `log`.
 */
export function recordingTransport(log) {
  return class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      log.sockets.push(this);
      const connection = { createdAt: Date.now(), opened: false, closedAt: null, code: null, reason: null };
      log.connections.push(connection);
      this.on('open', () => {
        connection.opened = true;
      });
      this.on('close', (code, reason) => {
        connection.closedAt = Date.now();
        connection.code = code;
        connection.reason = reason.toString();
      });
      this.on('error', () => {
        // The client sees the failure through onerror/onclose; recorded via 'close'.
      });
      this.on('message', (data, isBinary) => {
        log.frames.push({
          dir: 'in',
          binary: isBinary,
          data: isBinary ? Buffer.from(data instanceof ArrayBuffer ? new Uint8Array(data) : data) : data.toString(),
        });
      });
    }

    send(data, ...rest) {
      const binary = typeof data !== 'string';
      log.frames.push({
        dir: 'out',
        binary,
        data: binary ? Buffer.from(data instanceof ArrayBuffer ? new Uint8Array(data) : data) : data,
      });
      return super.send(data, ...rest);
    }
  };
}

/** Closes a RealtimeClient without leaving timers behind that would keep the process alive. */
export async function closeRealtime(realtime) {
  const channels = [...realtime.getChannels()];
  await withTimeout(
    Promise.all(
      channels.map(async (channel) => {
        await channel.unsubscribe(1000);
        channel.teardown();
      }),
    ),
    3000,
    'channels to leave at teardown',
  ).catch(() => {});
  // realtime-js schedules a deferred disconnect when the last channel goes, and its
  // `disconnect()` arms a 10 s fallback timer; the phoenix socket's own disconnect has neither.
  realtime._cancelPendingDisconnect?.();
  const socket = realtime.socketAdapter.getSocket();
  await withTimeout(new Promise((resolve) => socket.disconnect(resolve)), 3000, 'the socket to close').catch(() => {});
}

/**
 * A supabase-js client for `server`. `options.accessToken` (an async function) and
 * `options.realtime` (extra RealtimeClient options, e.g. `vsn`) are passed through. Returns
 * `{ supabase, realtime, wire }`.
 */
export function supabaseClient(server, scope, options = {}) {
  const wire = new WireLog();
  const { realtime: realtimeOptions = {}, accessToken, key = server.anonKey } = options;
  const supabase = createClient(server.httpUrl, key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: recordingTransport(wire), ...realtimeOptions },
    ...(accessToken ? { accessToken } : {}),
  });
  onTeardown(scope, () => closeRealtime(supabase.realtime));
  return { supabase, realtime: supabase.realtime, wire };
}

/**
 * A RealtimeClient from @supabase/realtime-js used directly, as apps without supabase-js do.
 * Returns `{ realtime, wire }`.
 */
export function realtimeClient(server, scope, { vsn, apikey = server.anonKey, ...rest } = {}) {
  const wire = new WireLog();
  const realtime = new RealtimeClient(`${server.wsUrl}/realtime/v1`, {
    params: { apikey },
    transport: recordingTransport(wire),
    ...(vsn ? { vsn } : {}),
    ...rest,
  });
  onTeardown(scope, () => closeRealtime(realtime));
  return { realtime, wire };
}

/** A phoenix.js Socket on the server's `/socket` endpoint, connected. Returns `{ socket, wire }`. */
export function phoenixSocket(server, scope, { apikey = server.anonKey, ...rest } = {}) {
  const wire = new WireLog();
  const socket = new PhoenixSocket(`${server.wsUrl}/socket`, {
    params: { apikey },
    transport: recordingTransport(wire),
    ...rest,
  });
  onTeardown(scope, async () => {
    for (const channel of [...socket.channels]) channel.leave(1000);
    await withTimeout(new Promise((resolve) => socket.disconnect(resolve)), 3000, 'the phoenix socket to close').catch(
      () => {},
    );
  });
  socket.connect();
  return { socket, wire };
}

/**
 * Registers listeners on a realtime-js channel, before it is subscribed, and records what
 * they see: presence `join`/`leave`/`sync` events, broadcasts (of `broadcastEvent`, `'*'` for
 * all), `system` messages, and subscribe statuses (through {@link subscribe}).
 */
export function observe(channel, { presence = true, broadcastEvent = '*', system = true } = {}) {
  // `presence` holds join and leave events in the order they fired.
  const rec = { joins: [], leaves: [], presence: [], syncs: 0, broadcasts: [], system: [], statuses: [] };
  if (presence) {
    channel.on('presence', { event: 'sync' }, () => {
      rec.syncs++;
    });
    channel.on('presence', { event: 'join' }, (event) => {
      rec.joins.push(event);
      rec.presence.push(event);
    });
    channel.on('presence', { event: 'leave' }, (event) => {
      rec.leaves.push(event);
      rec.presence.push(event);
    });
  }
  if (broadcastEvent) channel.on('broadcast', { event: broadcastEvent }, (message) => rec.broadcasts.push(message));
  if (system) channel.on('system', {}, (message) => rec.system.push(message));
  rec.count = (status) => rec.statuses.filter((s) => s.status === status).length;
  return rec;
}

/**
 * Subscribes a realtime-js channel, recording statuses in `rec.statuses`, and resolves at the
 * first SUBSCRIBED; rejects at an earlier CHANNEL_ERROR, TIMED_OUT or CLOSED (with the
 * reason), or after `timeoutMs`. `onSubscribed` runs at every SUBSCRIBED, rejoins included,
 * which is where apps (re-)track.
 */
export async function subscribe(channel, rec, { onSubscribed, timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
  let settle;
  const first = new Promise((resolve, reject) => {
    settle = { resolve, reject };
  });
  channel.subscribe((status, error) => {
    rec.statuses.push({ status, error, at: Date.now() });
    if (status === 'SUBSCRIBED') {
      onSubscribed?.();
      settle.resolve();
    } else {
      settle.reject(new Error(`${channel.topic}: ${status}${error ? `: ${error.message}` : ''}`));
    }
  });
  return withTimeout(first, timeoutMs, `${channel.topic} to be SUBSCRIBED`);
}

/** Waits for the n-th occurrence of subscribe status `status` on `rec`. */
export function waitForStatus(rec, status, n = 1, timeoutMs = DEFAULT_TIMEOUT_MS) {
  return waitFor(
    () => rec.count(status) >= n,
    timeoutMs,
    `subscribe status ${status} #${n}`,
    () => JSON.stringify(rec.statuses.map((s) => s.status)),
  );
}

/** The presence keys of a channel's state, sorted. */
export const keysOf = (channel) => Object.keys(channel.presenceState()).sort();

/** A channel's presence state with `presence_ref`s removed, for comparing payloads. */
export function stateWithoutRefs(channel) {
  const out = {};
  for (const [key, metas] of Object.entries(channel.presenceState())) {
    out[key] = metas.map(({ presence_ref, ...rest }) => rest);
  }
  return out;
}

export const UUID_V1 = /^[0-9a-f]{8}-[0-9a-f]{4}-1[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
export const PHX_REF = /^[A-Za-z0-9_-]{16}$/;
