// A stand-in for realtime-js's RealtimeClient and RealtimeChannel with the behaviour the
// components rely on, driven by the tests: channel() reuses a channel of the same topic,
// bindings of a raw event name (presence_state, presence_diff) get the server's message,
// on('presence') throws once subscribe() has been called (as realtime-js >= 2.101 does),
// subscribe() is a no-op unless the channel is closed, removeChannel() leaves, then fires CLOSED.

export class FakeChannel {
  constructor(client, name, params) {
    this.client = client;
    this.topic = `realtime:${name}`;
    this.subTopic = name;
    this.params = params;
    this.state = 'closed';
    /** @type {{ type: string, filter: any, callback: Function }[]} */
    this.bindings = [];
    this.subscribeCalls = 0;
    this.statusCallback = null;
    /** @type {{ payload: any, at: number }[]} */
    this.tracks = [];
    this.trackResult = 'ok';
    this.raw = {};
    /** @type {any[]} broadcasts sent */
    this.sent = [];
    this.sendResult = 'ok';
  }

  on(type, filter, callback) {
    if ((this.state === 'joining' || this.state === 'joined') && (type === 'presence' || type === 'postgres_changes')) {
      throw new Error(`cannot add \`${type}\` callbacks for ${this.topic} after \`subscribe()\`.`);
    }
    this.bindings.push({ type, filter, callback });
    return this;
  }

  subscribe(callback) {
    if (this.state !== 'closed') return this;
    this.subscribeCalls += 1;
    this.state = 'joining';
    this.statusCallback = callback;
    return this;
  }

  track(payload) {
    this.tracks.push({ payload: structuredClone(payload), at: Date.now() });
    return Promise.resolve(this.trackResult);
  }

  send(message) {
    this.sent.push(structuredClone(message));
    return Promise.resolve(this.sendResult);
  }

  /** The server relays a broadcast from someone else. */
  broadcast(event, payload) {
    for (const b of this.bindings) {
      if (b.type === 'broadcast' && (b.filter?.event === '*' || b.filter?.event === event)) {
        b.callback({ type: 'broadcast', event, payload });
      }
    }
  }

  presenceState() {
    const out = {};
    for (const [key, { metas }] of Object.entries(this.raw)) {
      out[key] = metas.map(({ phx_ref, ...rest }) => ({ presence_ref: phx_ref, ...rest }));
    }
    return out;
  }

  fire(type, event, payload) {
    for (const b of this.bindings) {
      if (b.type === type && (b.filter?.event === undefined || b.filter.event === event)) b.callback(payload);
    }
  }

  // Driven by the tests.
  joined() {
    this.state = 'joined';
    this.statusCallback?.('SUBSCRIBED');
  }

  errored(message = 'socket closed') {
    this.state = 'errored';
    this.statusCallback?.('CHANNEL_ERROR', new Error(message));
  }

  /** The server pushes a system error and closes the channel; realtime-js drops it. */
  closedByServer(message) {
    if (message) this.fire('system', undefined, { extension: 'system', status: 'error', message });
    this.state = 'closed';
    this.client.forget(this);
    this.statusCallback?.('CLOSED');
  }

  /** The server sends its presence_state: `raw` is { key: { metas: [{ phx_ref, ... }] } }. */
  sync(raw) {
    this.raw = raw;
    this.fire('presence_state', undefined, structuredClone(raw));
    this.fire('presence', 'sync', { event: 'sync' });
  }

  /** The server sends a presence_diff ({ joins, leaves }, each { key: { metas } }). */
  diff(diff) {
    this.fire('presence_diff', undefined, structuredClone({ joins: {}, leaves: {}, ...diff }));
  }

  /** A presence_diff with one key joining with `metas`. */
  join(key, metas) {
    this.diff({ joins: { [key]: { metas } } });
  }

  /** A presence_diff with one key leaving with `metas`. */
  leave(key, metas) {
    this.diff({ leaves: { [key]: { metas } } });
  }
}

export class FakeRealtime {
  constructor() {
    /** @type {FakeChannel[]} the channels the client holds, like RealtimeClient.channels */
    this.channels = [];
    /** @type {FakeChannel[]} every channel ever created */
    this.created = [];
    /** @type {FakeChannel[]} */
    this.removed = [];
    /** When true, leaves wait for finishLeaves(). */
    this.holdLeaves = false;
    this.pendingLeaves = [];
  }

  channel(name, params = { config: {} }) {
    const existing = this.channels.find((c) => c.topic === `realtime:${name}`);
    if (existing) return existing;
    const channel = new FakeChannel(this, name, params);
    this.channels.push(channel);
    this.created.push(channel);
    return channel;
  }

  forget(channel) {
    this.channels = this.channels.filter((c) => c !== channel);
  }

  removeChannel(channel) {
    this.removed.push(channel);
    channel.state = 'leaving';
    const finish = () => {
      channel.state = 'closed';
      this.forget(channel);
      channel.statusCallback?.('CLOSED');
      return 'ok';
    };
    if (!this.holdLeaves) return Promise.resolve().then(finish);
    return new Promise((resolve) => this.pendingLeaves.push(() => resolve(finish())));
  }

  finishLeaves() {
    const leaves = this.pendingLeaves;
    this.pendingLeaves = [];
    leaves.forEach((f) => f());
  }

  /** The channels that are still open (not removed). */
  live() {
    return this.channels.filter((c) => c.state !== 'leaving');
  }
}

/** A supabase-js client shape with just what SupabaseApp passes on. */
export function fakeClient() {
  return { realtime: new FakeRealtime() };
}

/** Lets pending promise callbacks run. */
export async function settle() {
  for (let i = 0; i < 5; i += 1) await Promise.resolve();
}
