// Presence with supabase-js (serializer 2.0.0, the default), several clients per room.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { useServer } from '../lib/harness.mjs';
import { startServer } from '../lib/server.mjs';
import {
  supabaseClient,
  observe,
  subscribe,
  keysOf,
  stateWithoutRefs,
  UUID_V1,
  PHX_REF,
} from '../lib/clients.mjs';
import { waitFor, withTimeout, staysFalse } from '../lib/wait.mjs';

const server = useServer();

let rooms = 0;
const newRoom = () => `presence-${process.pid}-${++rooms}`;

/**
 * A supabase-js client in `room` with presence key `key` (`''` for a server-chosen key) that
 * tracks `payload` at every SUBSCRIBED, as apps do.
 */
async function participant(t, room, { key, payload, track = true, server: on = server } = {}) {
  const client = supabaseClient(on, t);
  const channel = client.supabase.channel(room, { config: { presence: { key: key ?? '' } } });
  const rec = observe(channel);
  const tracks = [];
  await subscribe(channel, rec, {
    onSubscribed: () => {
      if (track) tracks.push(channel.track(payload));
    },
  });
  if (track) assert.equal(await tracks[0], 'ok', 'track() resolves ok');
  return { ...client, channel, rec, tracks };
}

const waitState = (channel, expected, what) =>
  waitFor(
    () => isDeepStrictEqual(stateWithoutRefs(channel), expected),
    5000,
    what ?? `presence state ${JSON.stringify(expected)}`,
    () => JSON.stringify(channel.presenceState()),
  );

/** The presence_diff frames a client received, decoded (serializer 2.0.0 text frames). */
function diffFrames(wire) {
  return wire
    .received()
    .filter((f) => !f.binary)
    .map((f) => JSON.parse(f.data))
    .filter((m) => m[3] === 'presence_diff');
}

test('three clients see each other: presenceState shape and presence_ref', async (t) => {
  const room = newRoom();
  const alice = await participant(t, room, { key: 'alice', payload: { user: 'alice', n: 1 } });
  const bob = await participant(t, room, { key: 'bob', payload: { user: 'bob', n: 2 } });
  const carol = await participant(t, room, { key: 'carol', payload: { user: 'carol', n: 3 } });
  const expected = {
    alice: [{ user: 'alice', n: 1 }],
    bob: [{ user: 'bob', n: 2 }],
    carol: [{ user: 'carol', n: 3 }],
  };
  for (const p of [alice, bob, carol]) await waitState(p.channel, expected);

  // presenceState() is { key: [ { presence_ref, ...payload } ] }, the same refs everywhere.
  const seen = alice.channel.presenceState();
  for (const key of ['alice', 'bob', 'carol']) {
    assert.equal(seen[key].length, 1);
    assert.match(seen[key][0].presence_ref, PHX_REF);
  }
  assert.equal(new Set(Object.values(seen).map((m) => m[0].presence_ref)).size, 3, 'refs are unique');
  assert.deepEqual(bob.channel.presenceState(), seen);
  assert.deepEqual(carol.channel.presenceState(), seen);

  // carol joined last: her state came from presence_state (alice, bob) plus her own diff.
  assert.deepEqual(
    carol.rec.joins.map((j) => j.key).sort(),
    ['alice', 'bob', 'carol'],
    'carol gets a join event for everyone, herself included',
  );
});

test('join reply, then presence_state with the join_ref, on the wire', async (t) => {
  const room = newRoom();
  await participant(t, room, { key: 'first', payload: { v: 1 } });
  const second = await participant(t, room, { key: 'second', payload: { v: 2 }, track: false });
  const frames = second.wire
    .received()
    .filter((f) => !f.binary)
    .map((f) => JSON.parse(f.data))
    .filter((m) => m[2] === `realtime:${room}`);
  const join = second.wire
    .sent()
    .map((f) => JSON.parse(f.data))
    .find((m) => m[3] === 'phx_join');
  assert.ok(join, 'a phx_join was sent');
  const [joinRef] = join;
  assert.deepEqual(frames[0], [joinRef, joinRef, `realtime:${room}`, 'phx_reply', { status: 'ok', response: { postgres_changes: [] } }]);
  assert.equal(frames[1][0], joinRef, 'presence_state carries the join_ref');
  assert.equal(frames[1][1], null);
  assert.equal(frames[1][3], 'presence_state');
  assert.deepEqual(Object.keys(frames[1][4]), ['first']);
  assert.equal(frames[1][4].first.metas.length, 1);
  assert.equal(frames[1][4].first.metas[0].v, 1);
  assert.match(frames[1][4].first.metas[0].phx_ref, PHX_REF);
});

test('join and leave events reach the others', async (t) => {
  const room = newRoom();
  const watcher = await participant(t, room, { key: 'watcher', payload: { role: 'watcher' } });
  const alice = await participant(t, room, { key: 'alice', payload: { user: 'alice' } });

  const join = await waitFor(() => watcher.rec.joins.find((j) => j.key === 'alice'), 5000, 'join of alice');
  assert.equal(join.event, 'join');
  assert.deepEqual(join.currentPresences, []);
  assert.equal(join.newPresences.length, 1);
  assert.equal(join.newPresences[0].user, 'alice');
  assert.match(join.newPresences[0].presence_ref, PHX_REF);
  // The tracker sees its own join too.
  await waitFor(() => alice.rec.joins.find((j) => j.key === 'alice'), 5000, 'alice sees herself join');

  assert.equal(await alice.supabase.removeChannel(alice.channel), 'ok');
  const leave = await waitFor(() => watcher.rec.leaves.find((l) => l.key === 'alice'), 5000, 'leave of alice');
  assert.equal(leave.event, 'leave');
  assert.deepEqual(leave.currentPresences, []);
  assert.deepEqual(
    leave.leftPresences.map(({ presence_ref, ...p }) => p),
    [{ user: 'alice' }],
  );
  assert.equal(leave.leftPresences[0].presence_ref, join.newPresences[0].presence_ref);
  await waitState(watcher.channel, { watcher: [{ role: 'watcher' }] });
});

test('re-track with a new payload: one diff, join then leave for the same key, one entry', async (t) => {
  const room = newRoom();
  const watcher = await participant(t, room, { key: 'watcher', payload: {} });
  const alice = await participant(t, room, { key: 'alice', payload: { status: 'online' } });
  await waitState(watcher.channel, { watcher: [{}], alice: [{ status: 'online' }] });
  const oldRef = watcher.channel.presenceState().alice[0].presence_ref;
  const joinsBefore = watcher.rec.joins.length;
  const leavesBefore = watcher.rec.leaves.length;
  const diffsBefore = diffFrames(watcher.wire).length;

  assert.equal(await alice.channel.track({ status: 'away' }), 'ok');
  await waitState(watcher.channel, { watcher: [{}], alice: [{ status: 'away' }] });

  const joins = watcher.rec.joins.slice(joinsBefore);
  const leaves = watcher.rec.leaves.slice(leavesBefore);
  const sequence = watcher.rec.presence.slice(joinsBefore + leavesBefore).map((e) => `${e.event}:${e.key}`);
  assert.deepEqual(sequence, ['join:alice', 'leave:alice'], 'join, then leave, for the same key');
  assert.equal(joins.length, 1, 'one join event');
  assert.equal(leaves.length, 1, 'one leave event');
  assert.equal(joins[0].key, 'alice');
  assert.equal(leaves[0].key, 'alice');
  assert.equal(joins[0].newPresences[0].status, 'away');
  assert.equal(leaves[0].leftPresences[0].status, 'online');
  assert.equal(leaves[0].leftPresences[0].presence_ref, oldRef);
  const newRef = watcher.channel.presenceState().alice[0].presence_ref;
  assert.notEqual(newRef, oldRef, 'the update has a fresh presence_ref');
  assert.match(newRef, PHX_REF);

  // On the wire: exactly one presence_diff with the new meta (phx_ref_prev = old ref) in joins
  // and the old meta in leaves.
  const diffs = diffFrames(watcher.wire).slice(diffsBefore);
  assert.equal(diffs.length, 1, `one presence_diff, got ${JSON.stringify(diffs)}`);
  const [joinRef, ref, topic, , payload] = diffs[0];
  assert.equal(joinRef, null);
  assert.equal(ref, null);
  assert.equal(topic, `realtime:${room}`);
  assert.deepEqual(payload, {
    joins: { alice: { metas: [{ status: 'away', phx_ref: newRef, phx_ref_prev: oldRef }] } },
    leaves: { alice: { metas: [{ status: 'online', phx_ref: oldRef }] } },
  });
});

test('re-tracking an identical payload produces no diff and no events', async (t) => {
  const room = newRoom();
  const watcher = await participant(t, room, { key: 'watcher', payload: {} });
  const alice = await participant(t, room, { key: 'alice', payload: { status: 'online', n: [1, 2] } });
  await waitState(watcher.channel, { watcher: [{}], alice: [{ status: 'online', n: [1, 2] }] });
  const ref = watcher.channel.presenceState().alice[0].presence_ref;
  const joins = watcher.rec.joins.length;
  const leaves = watcher.rec.leaves.length;
  const diffs = diffFrames(watcher.wire).length;

  assert.equal(await alice.channel.track({ status: 'online', n: [1, 2] }), 'ok');
  // A broadcast sent after the track is a barrier: the server handles alice's messages in
  // order, so a diff from the track would reach the watcher before the broadcast.
  await alice.channel.send({ type: 'broadcast', event: 'barrier', payload: {} });
  await waitFor(() => watcher.rec.broadcasts.some((b) => b.event === 'barrier'), 5000, 'the barrier broadcast');

  assert.equal(diffFrames(watcher.wire).length, diffs, 'no presence_diff');
  assert.equal(watcher.rec.joins.length, joins, 'no join event');
  assert.equal(watcher.rec.leaves.length, leaves, 'no leave event');
  assert.equal(watcher.channel.presenceState().alice[0].presence_ref, ref, 'same presence_ref');
});

test('untrack gives a leave; tracking again is a fresh join', async (t) => {
  const room = newRoom();
  const watcher = await participant(t, room, { key: 'watcher', payload: {} });
  const alice = await participant(t, room, { key: 'alice', payload: { user: 'alice' } });
  await waitState(watcher.channel, { watcher: [{}], alice: [{ user: 'alice' }] });

  assert.equal(await alice.channel.untrack(), 'ok');
  const leave = await waitFor(() => watcher.rec.leaves.find((l) => l.key === 'alice'), 5000, 'leave after untrack');
  assert.equal(leave.leftPresences[0].user, 'alice');
  await waitState(watcher.channel, { watcher: [{}] });
  await waitState(alice.channel, { watcher: [{}] }, 'alice no longer sees herself');

  const diffs = diffFrames(watcher.wire).length;
  assert.equal(await alice.channel.track({ user: 'alice', again: true }), 'ok');
  await waitState(watcher.channel, { watcher: [{}], alice: [{ user: 'alice', again: true }] });
  const [diff] = diffFrames(watcher.wire).slice(diffs);
  assert.deepEqual(diff[4].leaves, {});
  assert.equal(diff[4].joins.alice.metas.length, 1);
  assert.equal('phx_ref_prev' in diff[4].joins.alice.metas[0], false, 'no phx_ref_prev after an untrack');
});

test('a client whose socket drops abruptly leaves, and comes back after its reconnect', async (t) => {
  const room = newRoom();
  const watcher = await participant(t, room, { key: 'watcher', payload: {} });
  const alice = await participant(t, room, { key: 'alice', payload: { user: 'alice' } });
  await waitState(watcher.channel, { watcher: [{}], alice: [{ user: 'alice' }] });

  // Destroy the TCP connection under realtime-js: no close frame, no phx_leave.
  alice.wire.socket.terminate();
  const leave = await waitFor(() => watcher.rec.leaves.find((l) => l.key === 'alice'), 5000, 'leave after the drop');
  assert.equal(leave.leftPresences[0].user, 'alice');
  await waitState(watcher.channel, { watcher: [{}] });

  // realtime-js reconnects (after 1 s), rejoins, and the app re-tracks on SUBSCRIBED.
  await waitFor(() => alice.rec.count('SUBSCRIBED') >= 2, 8000, 'alice to be SUBSCRIBED again');
  await waitState(watcher.channel, { watcher: [{}], alice: [{ user: 'alice' }] });
});

test('a killed client process leaves', async (t) => {
  const room = newRoom();
  const watcher = await participant(t, room, { key: 'watcher', payload: {} });
  const script = fileURLToPath(new URL('../lib/tracker-child.mjs', import.meta.url));
  const child = spawn(process.execPath, [script, server.httpUrl, server.anonKey, room, 'child'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  t.after(async () => {
    child.kill('SIGKILL');
    await exited;
  });
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk) => (out += chunk));
  await waitFor(() => out.includes('tracked'), 15_000, 'the child to track', () => out);
  await waitFor(() => watcher.rec.joins.find((j) => j.key === 'child'), 5000, 'join of the child');

  child.kill('SIGKILL');
  await withTimeout(exited, 5000, 'the child to exit');
  const leave = await waitFor(() => watcher.rec.leaves.find((l) => l.key === 'child'), 5000, 'leave of the killed child');
  assert.equal(leave.leftPresences[0].user, 'child');
  await waitState(watcher.channel, { watcher: [{}] });
});

test('several connections under one presence key are several metas', async (t) => {
  const room = newRoom();
  const tabs = [];
  for (const n of [1, 2, 3]) tabs.push(await participant(t, room, { key: 'shared', payload: { tab: n } }));
  for (const tab of tabs) {
    await waitFor(
      () => tab.channel.presenceState().shared?.length === 3,
      5000,
      'three metas under "shared"',
      () => JSON.stringify(tab.channel.presenceState()),
    );
  }
  const metas = tabs[0].channel.presenceState().shared;
  assert.deepEqual(keysOf(tabs[0].channel), ['shared']);
  assert.deepEqual(metas.map((m) => m.tab).sort(), [1, 2, 3]);
  assert.equal(new Set(metas.map((m) => m.presence_ref)).size, 3, 'each meta has its own presence_ref');

  const leavesBefore = tabs[0].rec.leaves.length;
  assert.equal(await tabs[2].supabase.removeChannel(tabs[2].channel), 'ok');
  const leave = await waitFor(() => tabs[0].rec.leaves[leavesBefore], 5000, 'leave of tab 3');
  assert.equal(leave.key, 'shared');
  assert.deepEqual(leave.leftPresences.map((p) => p.tab), [3]);
  assert.deepEqual(leave.currentPresences.map((p) => p.tab).sort(), [1, 2]);
  await waitFor(() => tabs[1].channel.presenceState().shared?.length === 2, 5000, 'two metas left');
  assert.deepEqual(
    tabs[1].channel.presenceState().shared.map((m) => m.tab).sort(),
    [1, 2],
  );
});

test('an empty presence key becomes a distinct UUID per join', async (t) => {
  const room = newRoom();
  const a = await participant(t, room, { payload: { who: 'a' } });
  const b = await participant(t, room, { payload: { who: 'b' } });
  await waitFor(() => keysOf(a.channel).length === 2 && keysOf(b.channel).length === 2, 5000, 'two keys');
  const keys = keysOf(a.channel);
  assert.deepEqual(keysOf(b.channel), keys);
  for (const key of keys) assert.match(key, UUID_V1);
  assert.notEqual(keys[0], keys[1]);
  const keyOf = (who) => Object.entries(a.channel.presenceState()).find(([, m]) => m[0].who === who)[0];
  const oldKey = keyOf('b');

  // b leaves and joins the room again: the new join gets a new key.
  assert.equal(await b.supabase.removeChannel(b.channel), 'ok');
  await waitFor(() => a.rec.leaves.some((l) => l.key === oldKey), 5000, 'leave of the old key');
  const again = b.supabase.channel(room, { config: { presence: { key: '' } } });
  const rec = observe(again);
  let tracked;
  await subscribe(again, rec, { onSubscribed: () => (tracked = again.track({ who: 'b' })) });
  assert.equal(await tracked, 'ok');
  await waitFor(() => keysOf(a.channel).length === 2, 5000, 'b back under a new key');
  const newKey = keyOf('b');
  assert.match(newKey, UUID_V1);
  assert.notEqual(newKey, oldKey);
});

test('a client with presence disabled gets no presence_state', async (t) => {
  const room = newRoom();
  await participant(t, room, { key: 'someone', payload: {} });
  const quiet = supabaseClient(server, t);
  const channel = quiet.supabase.channel(room);
  const rec = observe(channel, { presence: false });
  await subscribe(channel, rec);
  // The join reply is in; presence_state would have followed it immediately.
  assert.ok(
    await staysFalse(() => quiet.wire.received().some((f) => !f.binary && f.data.includes('"presence_state"'))),
    'no presence_state without config.presence.enabled',
  );
  const join = JSON.parse(quiet.wire.sent().find((f) => f.data.includes('phx_join')).data);
  assert.equal(join[4].config.presence.enabled, false);

  // It can still track; the others see it.
  const watcher = await participant(t, room, { key: 'watcher', payload: {} });
  assert.equal(await channel.track({ quiet: true }), 'ok');
  await waitFor(
    () => Object.values(watcher.channel.presenceState()).some((metas) => metas[0].quiet === true),
    5000,
    'the track of the presence-less channel',
  );
});

test('a late joiner gets only the latest payload of an updated presence', async (t) => {
  const room = newRoom();
  const alice = await participant(t, room, { key: 'alice', payload: { step: 1 } });
  assert.equal(await alice.channel.track({ step: 2 }), 'ok');
  assert.equal(await alice.channel.track({ step: 3 }), 'ok');
  const late = await participant(t, room, { key: 'late', payload: {} });
  await waitState(late.channel, { alice: [{ step: 3 }], late: [{}] });
  // The state holds one meta for alice; with diff coalescing it may be the state as last
  // published, and the pending update follows as a diff.
  const frame = late.wire
    .received()
    .map((f) => JSON.parse(f.data))
    .find((m) => m[3] === 'presence_state');
  assert.equal(frame[4].alice.metas.length, 1, 'one meta in presence_state');
});

test('numbers in a payload reach the others as the tracker wrote them', async (t) => {
  // Doubles that a parser which does not round correctly reads one unit off (1.1e29), the
  // smallest subnormal, and a value with no short exact decimal.
  const payload = { big: 1.1e29, tiny: 5e-324, tenth: 0.1, third: 1 / 3, int: 9007199254740991 };
  const room = newRoom();
  const bob = await participant(t, room, { key: 'bob', payload: {} });
  await participant(t, room, { key: 'alice', payload });
  await waitState(bob.channel, { alice: [payload], bob: [{}] }, 'the diff carries the same numbers');
  const late = await participant(t, room, { key: 'late', payload: {} });
  await waitState(
    late.channel,
    { alice: [payload], bob: [{}], late: [{}] },
    'presence_state carries the same numbers',
  );
});

test('an update under a shared key replaces only the updater\'s meta', async (t) => {
  const room = newRoom();
  const tab1 = await participant(t, room, { key: 'k', payload: { tab: 1, s: 'a' } });
  const tab2 = await participant(t, room, { key: 'k', payload: { tab: 2, s: 'a' } });
  const watcher = await participant(t, room, { key: 'w', payload: {} });
  const sorted = (ch) => stateWithoutRefs(ch).k?.slice().sort((x, y) => x.tab - y.tab);
  await waitFor(() => sorted(watcher.channel)?.length === 2, 5000, 'two metas under k');
  const tab2Ref = watcher.channel.presenceState().k.find((m) => m.tab === 2).presence_ref;

  const from = watcher.rec.presence.length;
  assert.equal(await tab1.channel.track({ tab: 1, s: 'b' }), 'ok');
  await waitFor(
    () => isDeepStrictEqual(sorted(watcher.channel), [{ tab: 1, s: 'b' }, { tab: 2, s: 'a' }]),
    5000,
    'tab 1 updated, tab 2 unchanged',
    () => JSON.stringify(watcher.channel.presenceState()),
  );
  const events = watcher.rec.presence.slice(from);
  assert.deepEqual(events.map((e) => e.event), ['join', 'leave']);
  assert.deepEqual(events[0].newPresences.map((p) => p.tab), [1], 'the join carries only the updated meta');
  assert.deepEqual(events[1].leftPresences.map((p) => p.tab), [1], 'the leave carries only the old meta');
  assert.equal(watcher.channel.presenceState().k.find((m) => m.tab === 2).presence_ref, tab2Ref);
  await waitFor(() => sorted(tab2.channel)?.[0]?.s === 'b', 5000, 'tab 2 sees the update');

  // Untracking one tab removes only its meta.
  assert.equal(await tab2.channel.untrack(), 'ok');
  await waitFor(
    () => isDeepStrictEqual(sorted(watcher.channel), [{ tab: 1, s: 'b' }]),
    5000,
    'only tab 1 left under k',
  );
});

test('one socket, two rooms: leaving one keeps the other, dropping the socket leaves both', async (t) => {
  const rooms2 = [newRoom(), newRoom()];
  const watchers = [];
  for (const room of rooms2) watchers.push(await participant(t, room, { key: 'watcher', payload: {} }));
  const multi = supabaseClient(server, t);
  const channels = [];
  for (const room of rooms2) {
    const channel = multi.supabase.channel(room, { config: { presence: { key: 'multi' } } });
    const rec = observe(channel);
    let tracked;
    await subscribe(channel, rec, { onSubscribed: () => (tracked = channel.track({ room })) });
    assert.equal(await tracked, 'ok');
    channels.push({ channel, rec });
  }
  assert.equal(multi.wire.connections.length, 1, 'both channels share one socket');
  for (const [i, w] of watchers.entries()) {
    await waitState(w.channel, { watcher: [{}], multi: [{ room: rooms2[i] }] });
  }

  assert.equal(await multi.supabase.removeChannel(channels[0].channel), 'ok');
  await waitState(watchers[0].channel, { watcher: [{}] });
  // The other room is untouched: still present, and broadcasts still flow.
  await channels[1].channel.send({ type: 'broadcast', event: 'still-here', payload: {} });
  await waitFor(() => watchers[1].rec.broadcasts.some((b) => b.event === 'still-here'), 5000, 'broadcast in room 2');
  assert.deepEqual(stateWithoutRefs(watchers[1].channel), { watcher: [{}], multi: [{ room: rooms2[1] }] });

  multi.wire.socket.terminate();
  await waitState(watchers[1].channel, { watcher: [{}] });
});

test('track() right after subscribe() (before the join reply) is sent once joined', async (t) => {
  const room = newRoom();
  const watcher = await participant(t, room, { key: 'watcher', payload: {} });
  const eager = supabaseClient(server, t);
  const channel = eager.supabase.channel(room, { config: { presence: { key: 'eager' } } });
  const rec = observe(channel);
  const subscribed = subscribe(channel, rec);
  const tracked = channel.track({ eager: true });
  await subscribed;
  assert.equal(await tracked, 'ok');
  await waitState(watcher.channel, { watcher: [{}], eager: [{ eager: true }] });
});

test('twenty clients joining at once converge on the same state', async (t) => {
  const room = newRoom();
  const n = 20;
  const all = await Promise.all(
    Array.from({ length: n }, (_, i) => participant(t, room, { key: `u${i}`, payload: { i } })),
  );
  const expected = Object.fromEntries(Array.from({ length: n }, (_, i) => [`u${i}`, [{ i }]]));
  for (const p of all) await waitState(p.channel, expected, `all ${n} keys`);
  const reference = all[0].channel.presenceState();
  for (const p of all) assert.deepEqual(p.channel.presenceState(), reference, 'identical refs everywhere');
});

test('the sixth presence call within the window closes the channel', async (t) => {
  const room = newRoom();
  const watcher = await participant(t, room, { key: 'watcher', payload: {} });
  const busy = await participant(t, room, { key: 'busy', payload: { n: 1 } }); // call 1
  for (const n of [2, 3, 4, 5]) assert.equal(await busy.channel.track({ n }), 'ok', `call ${n}`);
  busy.channel.track({ n: 6 }); // call 6: refused
  const system = await waitFor(() => busy.rec.system[0], 5000, 'the rate-limit system message', () => busy.wire.dump());
  assert.deepEqual(system, {
    extension: 'system',
    status: 'error',
    message: 'Client presence rate limit exceeded',
    channel: room,
  });
  await waitFor(() => busy.rec.count('CLOSED') === 1, 5000, 'CLOSED');
  await waitState(watcher.channel, { watcher: [{}] });
});

test('a presence payload over the size limit closes the channel', async (t) => {
  const room = newRoom();
  const watcher = await participant(t, room, { key: 'watcher', payload: {} });
  const big = await participant(t, room, { key: 'big', payload: { small: true } });
  big.channel.track({ blob: 'z'.repeat(3_100_000) });
  const system = await waitFor(() => big.rec.system[0], 10_000, 'the size system message');
  assert.equal(system.message, 'Track message size exceeded');
  assert.equal(system.status, 'error');
  await waitFor(() => big.rec.count('CLOSED') === 1, 5000, 'CLOSED');
  await waitState(watcher.channel, { watcher: [{}] });
});

test('rapid presence changes without waiting converge on the last one', async (t) => {
  const room = newRoom();
  const watcher = await participant(t, room, { key: 'watcher', payload: {} });
  const alice = await participant(t, room, { key: 'alice', payload: { n: 0 } }); // call 1
  const results = await Promise.all([
    alice.channel.track({ n: 1 }),
    alice.channel.untrack(),
    alice.channel.track({ n: 2 }),
    alice.channel.track({ n: 3 }),
  ]);
  assert.deepEqual(results, ['ok', 'ok', 'ok', 'ok']);
  for (const p of [watcher, alice]) await waitState(p.channel, { watcher: [{}], alice: [{ n: 3 }] });
  // Whatever the server merges (it coalesces only large rooms), the last event is the final
  // state.
  const steps = watcher.rec.presence
    .filter((e) => e.key === 'alice')
    .map((e) => `${e.event}:${(e.newPresences ?? e.leftPresences)[0].n}`);
  assert.ok(steps.includes('join:3'), JSON.stringify(steps));
  assert.ok(!steps.slice(steps.indexOf('join:3') + 1).some((s) => s.startsWith('join')), JSON.stringify(steps));
});

test('a small room on the default server announces every step at once and in order', async (t) => {
  // Coalescing is for large rooms: a two-member room hears a track then an untrack inside one
  // 50 ms window, as it does from Supabase.
  const room = newRoom();
  const watcher = await participant(t, room, { key: 'watcher', payload: {} });
  const alice = await participant(t, room, { key: 'alice', payload: { n: 0 } });
  assert.deepEqual(await Promise.all([alice.channel.untrack(), alice.channel.track({ n: 1 })]), ['ok', 'ok']);
  for (const p of [watcher, alice]) await waitState(p.channel, { watcher: [{}], alice: [{ n: 1 }] });
  const steps = watcher.rec.presence
    .filter((e) => e.key === 'alice')
    .map((e) => `${e.event}:${(e.newPresences ?? e.leftPresences)[0].n}`);
  assert.deepEqual(steps, ['join:0', 'leave:0', 'join:1']);
});

test('with the presence window at 0, every step is announced in order, as Supabase does', async (t) => {
  const own = await startServer(t, { env: { HEADCOUNT_PRESENCE_WINDOW_MS: '0' } });
  const room = newRoom();
  const watcher = await participant(t, room, { key: 'watcher', payload: {}, server: own });
  const alice = await participant(t, room, { key: 'alice', payload: { n: 0 }, server: own });
  const results = await Promise.all([
    alice.channel.track({ n: 1 }),
    alice.channel.untrack(),
    alice.channel.track({ n: 2 }),
    alice.channel.track({ n: 3 }),
  ]);
  assert.deepEqual(results, ['ok', 'ok', 'ok', 'ok']);
  for (const p of [watcher, alice]) await waitState(p.channel, { watcher: [{}], alice: [{ n: 3 }] });
  const steps = watcher.rec.presence
    .filter((e) => e.key === 'alice')
    .map((e) => `${e.event}:${(e.newPresences ?? e.leftPresences)[0].n}`);
  assert.deepEqual(steps, ['join:0', 'join:1', 'leave:0', 'leave:1', 'join:2', 'join:3', 'leave:2']);
});

test('a room whose presence state is over 1 MiB can still be joined', async (t) => {
  const room = newRoom();
  for (let i = 0; i < 4; i++) await participant(t, room, { key: `fat${i}`, payload: { blob: String(i).repeat(300_000) } });
  const late = supabaseClient(server, t);
  const channel = late.supabase.channel(room, { config: { presence: { key: 'late' } } });
  const rec = observe(channel);
  await subscribe(channel, rec);
  await waitFor(
    () => keysOf(channel).length === 4,
    5000,
    'the late joiner to get the 1.2 MB presence state',
    () => `late joiner sockets: ${JSON.stringify(late.wire.connections)}; statuses: ${JSON.stringify(rec.statuses.map((s) => s.status))}`,
  );
  assert.equal(channel.presenceState().fat3[0].blob.length, 300_000);
  assert.equal(late.wire.connections.length, 1, 'no reconnect');
});
