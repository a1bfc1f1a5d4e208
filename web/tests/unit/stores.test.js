import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { get } from 'svelte/store';
import { presenceStateStore, userStatusStore, presenceCount } from '../../src/lib/index.js';
import { CallBudget } from '../../src/lib/call-budget.js';
import { makePresenceState } from '../../src/lib/presence-state.js';
import { FakeRealtime, settle } from './fake-realtime.js';

const meta = (ref, fields = {}) => ({ phx_ref: ref, ...fields });

/** Subscribes to a store and records every value it emits. */
function watch(store) {
  const values = [];
  const stop = store.subscribe((v) => values.push(v));
  return { values, last: () => values[values.length - 1], stop };
}

let realtime;
beforeEach(() => {
  realtime = new FakeRealtime();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('presenceStateStore', () => {
  it('registers every presence callback before subscribe()', () => {
    const w = watch(presenceStateStore(realtime, 'room'));
    const [channel] = realtime.created;
    expect(channel.subscribeCalls).toBe(1);
    // A presence binding (so realtime-js asks for presence on the join) and the server's raw
    // presence messages, which the store's own view is built from.
    const types = channel.bindings.map((b) => b.type);
    expect(types).toEqual(expect.arrayContaining(['presence', 'presence_state', 'presence_diff']));
    // The fake throws for on('presence') after subscribe(), as realtime-js does: no error means
    // the order was right.
    expect(w.last().error).toBeNull();
    w.stop();
  });

  it('opens nothing until it has a subscriber', () => {
    presenceStateStore(realtime, 'room');
    expect(realtime.created).toHaveLength(0);
  });

  it('stays null (Loading...) after SUBSCRIBED until the first sync', () => {
    const w = watch(presenceStateStore(realtime, 'room'));
    const [channel] = realtime.created;
    expect(w.last().data).toBeNull();
    channel.joined();
    expect(w.last().data).toBeNull();
    expect(w.last().error).toBeNull();
    channel.sync({ k1: { metas: [meta('r1', { name: 'Ada' })] } });
    expect(w.last().data.k1).toEqual([{ presence_ref: 'r1', name: 'Ada' }]);
    w.stop();
  });

  it('counts distinct keys in a non-enumerable count', () => {
    const w = watch(presenceStateStore(realtime, 'room'));
    const [channel] = realtime.created;
    channel.joined();
    channel.sync({
      a: { metas: [meta('r1'), meta('r2')] },
      b: { metas: [meta('r3')] },
      c: { metas: [meta('r4')] },
    });
    const state = w.last().data;
    expect(state.count).toBe(3);
    expect(Object.keys(state)).toEqual(['a', 'b', 'c']);
    expect(Object.prototype.propertyIsEnumerable.call(state, 'count')).toBe(false);
    expect('count' in JSON.parse(JSON.stringify(state))).toBe(false);
    const seen = [];
    for (const key in state) seen.push(key);
    expect(seen).toEqual(['a', 'b', 'c']);
    expect(presenceCount(state)).toBe(3);
    w.stop();
  });

  it('keeps a presence key named count as an entry', () => {
    const w = watch(presenceStateStore(realtime, 'room'));
    const [channel] = realtime.created;
    channel.joined();
    channel.sync({
      count: { metas: [meta('r1', { name: 'Count' })] },
      x: { metas: [meta('r3')] },
    });
    const state = w.last().data;
    expect(Object.keys(state).sort()).toEqual(['count', 'x']);
    expect(state.count).toEqual([{ presence_ref: 'r1', name: 'Count' }]);
    expect(presenceCount(state)).toBe(2);
    w.stop();
  });

  it('keeps a presence key named __proto__ as a plain entry', () => {
    const raw = {};
    Object.defineProperty(raw, '__proto__', { value: [{ presence_ref: 'r2' }], enumerable: true });
    raw.x = [{ presence_ref: 'r3' }];
    const state = makePresenceState(raw);
    expect(Object.keys(state).sort()).toEqual(['__proto__', 'x']);
    expect(state.count).toBe(2);
    expect(Object.getPrototypeOf(Object.getPrototypeOf(state))).toBe(Object.prototype);
  });

  it('names the channel: channel.name is the channel name', () => {
    const store = presenceStateStore(realtime, 'my-channel');
    const w = watch(store);
    expect(w.last().channel.name).toBe('my-channel');
    expect(store.channel.name).toBe('my-channel');
    expect(store.channel.topic).toBe('realtime:my-channel');
    w.stop();
  });

  it('sets an error when the channel errors, and clears it when the channel recovers', () => {
    const w = watch(presenceStateStore(realtime, 'room'));
    const [channel] = realtime.created;
    channel.joined();
    channel.sync({ a: { metas: [meta('r1')] } });
    channel.errored('socket closed');
    expect(w.last().data).toBeNull();
    expect(w.last().error.message).toBe('Channel room error: CHANNEL_ERROR (socket closed)');
    channel.joined();
    expect(w.last().error).toBeNull();
    expect(w.last().data).toBeNull();
    channel.sync({ b: { metas: [meta('r2')] } });
    expect(w.last().data.count).toBe(1);
    w.stop();
  });

  it('tracks the user status once joined, {} when none was given', async () => {
    const w = watch(presenceStateStore(realtime, 'room'));
    const [channel] = realtime.created;
    expect(channel.tracks).toHaveLength(0);
    channel.joined();
    expect(channel.tracks.map((t) => t.payload)).toEqual([{}]);
    w.stop();

    const other = new FakeRealtime();
    const w2 = watch(presenceStateStore(other, 'room', undefined, { name: 'Ada' }));
    other.created[0].joined();
    expect(other.created[0].tracks.map((t) => t.payload)).toEqual([{ name: 'Ada' }]);
    w2.stop();
  });

  it('re-tracks the latest status after every rejoin', () => {
    const store = presenceStateStore(realtime, 'room', undefined, { name: 'Ada', status: 'online' });
    const status = userStatusStore(store);
    const w = watch(store);
    const [channel] = realtime.created;
    channel.joined();
    status.updateStatus({ status: 'offline' });
    expect(channel.tracks.map((t) => t.payload.status)).toEqual(['online', 'offline']);
    channel.errored();
    status.updateStatus({ mood: 'busy' }); // not sent while errored
    expect(channel.tracks).toHaveLength(2);
    channel.joined();
    expect(channel.tracks[2].payload).toEqual({ name: 'Ada', status: 'offline', mood: 'busy' });
    channel.errored();
    channel.joined();
    expect(channel.tracks[3].payload).toEqual({ name: 'Ada', status: 'offline', mood: 'busy' });
    w.stop();
  });

  it('never sends a status the server already has', () => {
    const store = presenceStateStore(realtime, 'room', undefined, { a: 1, b: 2 });
    const status = userStatusStore(store);
    const w = watch(store);
    const [channel] = realtime.created;
    channel.joined();
    status.updateStatus({ b: 2, a: 1 });
    status.updateStatus({ a: 1 });
    expect(channel.tracks).toHaveLength(1);
    w.stop();
  });

  it('coalesces rapid updates: at most 5 calls in any 30 s, and the latest status goes out', async () => {
    vi.useFakeTimers();
    const store = presenceStateStore(realtime, 'room', undefined, { status: 'online' });
    const status = userStatusStore(store);
    const w = watch(store);
    const [channel] = realtime.created;
    channel.joined();
    let last;
    for (let i = 0; i < 40; i += 1) {
      last = i % 2 ? 'online' : 'offline';
      status.updateStatus({ status: last, click: i });
      await vi.advanceTimersByTimeAsync(250);
    }
    await vi.advanceTimersByTimeAsync(60_000);
    const times = channel.tracks.map((t) => t.at);
    for (const t of times) {
      const inWindow = times.filter((u) => u >= t && u < t + 30_000).length;
      expect(inWindow).toBeLessThanOrEqual(5);
    }
    expect(channel.tracks.at(-1).payload).toEqual({ status: last, click: 39 });
    expect(channel.tracks.length).toBeLessThan(10);
    w.stop();
  });

  it('starts a new budget on each join (the server starts a new window)', async () => {
    vi.useFakeTimers();
    const store = presenceStateStore(realtime, 'room');
    const status = userStatusStore(store);
    const w = watch(store);
    const [channel] = realtime.created;
    channel.joined();
    for (let i = 0; i < 4; i += 1) status.updateStatus({ n: i });
    expect(channel.tracks).toHaveLength(5);
    status.updateStatus({ n: 'deferred' });
    expect(channel.tracks).toHaveLength(5);
    channel.errored();
    channel.joined();
    expect(channel.tracks).toHaveLength(6);
    expect(channel.tracks[5].payload).toEqual({ n: 'deferred' });
    // The timer of the old join must not send a duplicate.
    await vi.advanceTimersByTimeAsync(60_000);
    expect(channel.tracks).toHaveLength(6);
    w.stop();
  });

  it('leaves and removes the channel when the last subscriber goes', async () => {
    const store = presenceStateStore(realtime, 'room');
    const a = watch(store);
    const b = watch(store);
    const [channel] = realtime.created;
    channel.joined();
    a.stop();
    await settle();
    expect(realtime.removed).toHaveLength(0);
    b.stop();
    await settle();
    expect(realtime.removed).toEqual([channel]);
    expect(realtime.channels).toHaveLength(0);
  });

  it('shares one channel and one subscribe between stores of the same channel', async () => {
    const one = presenceStateStore(realtime, 'room', undefined, { name: 'Ada' });
    const two = presenceStateStore(realtime, 'room', undefined, { status: 'online' });
    const w1 = watch(one);
    const w2 = watch(two);
    expect(realtime.created).toHaveLength(1);
    const [channel] = realtime.created;
    expect(channel.subscribeCalls).toBe(1);
    channel.joined();
    // One channel is one presence: both stores' statuses, merged, in one call.
    expect(channel.tracks.map((t) => t.payload)).toEqual([{ name: 'Ada', status: 'online' }]);
    channel.sync({ k: { metas: [meta('r1')] } });
    expect(w1.last().data.count).toBe(1);
    expect(w2.last().data.count).toBe(1);
    userStatusStore(two).updateStatus({ status: 'offline' });
    expect(channel.tracks.at(-1).payload).toEqual({ name: 'Ada', status: 'offline' });
    w1.stop();
    await settle();
    expect(realtime.removed).toHaveLength(0);
    channel.sync({ k: { metas: [meta('r2')] } });
    expect(w2.last().data.k[0].presence_ref).toBe('r2');
    w2.stop();
    await settle();
    expect(realtime.removed).toEqual([channel]);
  });

  it('forwards join and leave events to every store of the channel', () => {
    const one = presenceStateStore(realtime, 'room');
    const two = presenceStateStore(realtime, 'room');
    const seen = [];
    one.on('join', (e) => seen.push(['one', 'join', e.key, e.newPresences]));
    two.on('leave', (e) => seen.push(['two', 'leave', e.key, e.leftPresences]));
    const w1 = watch(one);
    const w2 = watch(two);
    const [channel] = realtime.created;
    channel.joined();
    channel.sync({});
    channel.join('k', [{ phx_ref: 'r1' }]);
    channel.leave('k', [{ phx_ref: 'r1' }]);
    expect(seen).toEqual([
      ['one', 'join', 'k', [{ presence_ref: 'r1' }]],
      ['two', 'leave', 'k', [{ presence_ref: 'r1' }]],
    ]);
    expect(() => one.on('sync', () => {})).toThrow(/use "join" or "leave"/);
    w1.stop();
    w2.stop();
  });

  it('opens a new channel after the server closes one, bindings before subscribe', async () => {
    vi.useFakeTimers();
    const store = presenceStateStore(realtime, 'room', undefined, { status: 'away' });
    const w = watch(store);
    const [first] = realtime.created;
    first.joined();
    first.closedByServer('Client presence rate limit exceeded');
    expect(w.last().error.message).toBe(
      'Channel room was closed by the server: Client presence rate limit exceeded',
    );
    await vi.advanceTimersByTimeAsync(999);
    expect(realtime.created).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(realtime.created).toHaveLength(2);
    const second = realtime.created[1];
    expect(second.subscribeCalls).toBe(1);
    expect(store.channel).toBe(second);
    second.joined();
    expect(w.last().error).toBeNull();
    expect(second.tracks.map((t) => t.payload)).toEqual([{ status: 'away' }]);
    second.sync({});
    expect(w.last().data.count).toBe(0);
    w.stop();
  });

  it('does not reopen a channel it left itself', async () => {
    vi.useFakeTimers();
    const w = watch(presenceStateStore(realtime, 'room'));
    realtime.created[0].joined();
    w.stop();
    await vi.advanceTimersByTimeAsync(30_000);
    expect(realtime.created).toHaveLength(1);
    expect(realtime.channels).toHaveLength(0);
  });

  it('waits for a channel of the same name to finish leaving before opening it again', async () => {
    realtime.holdLeaves = true;
    const first = watch(presenceStateStore(realtime, 'room'));
    realtime.created[0].joined();
    first.stop();
    await settle();
    const second = watch(presenceStateStore(realtime, 'room'));
    await settle();
    // realtime-js would still hand out the leaving channel, whose subscribe() is a no-op.
    expect(realtime.created).toHaveLength(1);
    realtime.finishLeaves();
    await settle();
    expect(realtime.created).toHaveLength(2);
    expect(realtime.created[1].subscribeCalls).toBe(1);
    second.stop();
  });

  it('reports a channel it cannot bind to', () => {
    const foreign = realtime.channel('room');
    foreign.subscribe(() => {});
    const w = watch(presenceStateStore(realtime, 'room'));
    expect(w.last().error.message).toMatch(/^Cannot listen to channel room: cannot add `presence` callbacks/);
    w.stop();
  });

  it('gives an error when realtime is missing', () => {
    const w = watch(presenceStateStore(undefined, 'room'));
    expect(w.last().error.message).toBe('Realtime is not initialized');
    w.stop();
  });
});

describe('userStatusStore', () => {
  it('holds the merged status and updates the channel', () => {
    const store = presenceStateStore(realtime, 'room', undefined, { name: 'Ada' });
    const status = userStatusStore(store, { status: 'online' });
    const s = watch(status);
    expect(s.last().data).toEqual({ name: 'Ada', status: 'online' });
    const w = watch(store);
    realtime.created[0].joined();
    status.updateStatus({ status: 'offline' });
    expect(s.last().data).toEqual({ name: 'Ada', status: 'offline' });
    expect(realtime.created[0].tracks.at(-1).payload).toEqual({ name: 'Ada', status: 'offline' });
    status.updateStatus(null); // ignored, like the original
    expect(realtime.created[0].tracks).toHaveLength(2);
    w.stop();
    s.stop();
  });

  it('accepts the channel a presence store opened, and refuses any other', () => {
    const store = presenceStateStore(realtime, 'room');
    const w = watch(store);
    const status = userStatusStore(store.channel, { mood: 'happy' });
    realtime.created[0].joined();
    expect(realtime.created[0].tracks.at(-1).payload).toEqual({ mood: 'happy' });
    expect(get(status).data).toEqual({ mood: 'happy' });
    expect(() => userStatusStore(realtime.channel('elsewhere'))).toThrow(/needs a store from presenceStateStore/);
    w.stop();
  });

  it('reports a failed track and sends the status again with the next join', async () => {
    const store = presenceStateStore(realtime, 'room', undefined, { status: 'online' });
    const status = userStatusStore(store);
    const w = watch(store);
    const s = watch(status);
    const [channel] = realtime.created;
    channel.trackResult = 'timed out';
    channel.joined();
    await settle();
    expect(s.last().error.message).toBe('Could not update the status on channel room: timed out');
    channel.trackResult = 'ok';
    channel.errored();
    channel.joined();
    await settle();
    expect(channel.tracks).toHaveLength(2);
    expect(s.last().error).toBeNull();
    w.stop();
    s.stop();
  });
});

describe('CallBudget', () => {
  it('never allows more than maxCalls in any window, whatever the call pattern', () => {
    let seed = 7;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let run = 0; run < 50; run += 1) {
      const budget = new CallBudget(5, 32_000);
      const made = [];
      let now = 0;
      for (let i = 0; i < 200; i += 1) {
        now += Math.floor(random() * 4000);
        const wait = budget.wait(now);
        if (wait === 0) {
          budget.record(now);
          made.push(now);
        } else {
          expect(budget.wait(now + wait)).toBe(0);
        }
      }
      for (const t of made) {
        expect(made.filter((u) => u >= t && u < t + 32_000).length).toBeLessThanOrEqual(5);
      }
      expect(made.length).toBeGreaterThan(5);
    }
  });
});
