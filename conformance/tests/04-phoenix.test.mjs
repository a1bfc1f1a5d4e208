// phoenix.js (the `phoenix` package: Socket and Presence) against the /socket endpoint.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Presence } from 'phoenix';
import { useServer } from '../lib/harness.mjs';
import { phoenixSocket, supabaseClient, realtimeClient, observe, subscribe, PHX_REF } from '../lib/clients.mjs';
import { waitFor, withTimeout } from '../lib/wait.mjs';

const server = useServer();

let rooms = 0;
const newRoom = () => `phx-${process.pid}-${++rooms}`;

/** Resolves with the reply of a phoenix.js push: `{ status, response }`. */
function replyOf(push, timeoutMs = 5000) {
  return withTimeout(
    new Promise((resolve) => {
      push
        .receive('ok', (response) => resolve({ status: 'ok', response }))
        .receive('error', (response) => resolve({ status: 'error', response }))
        .receive('timeout', () => resolve({ status: 'timeout' }));
    }),
    timeoutMs,
    `the reply to ${push.event}`,
  );
}

/**
 * A phoenix.js client joined to `realtime:<room>` with presence key `key`, with a Presence
 * whose callbacks are recorded.
 */
async function phxMember(t, room, { key, self = false, ack = false } = {}) {
  const { socket, wire } = phoenixSocket(server, t);
  const channel = socket.channel(`realtime:${room}`, {
    config: { presence: { key, enabled: true }, broadcast: { self, ack }, private: false },
  });
  const presence = new Presence(channel);
  const seen = { syncs: 0, joins: [], leaves: [], broadcasts: [] };
  presence.onSync(() => seen.syncs++);
  presence.onJoin((id, current, joined) => seen.joins.push({ id, current, joined }));
  presence.onLeave((id, current, left) => seen.leaves.push({ id, current, left }));
  channel.on('broadcast', (payload) => seen.broadcasts.push(payload));
  const joined = await replyOf(channel.join());
  assert.equal(joined.status, 'ok', `join: ${JSON.stringify(joined)}`);
  assert.deepEqual(joined.response, { postgres_changes: [] });
  const track = (payload) => replyOf(channel.push('presence', { type: 'presence', event: 'track', payload }));
  const untrack = () => replyOf(channel.push('presence', { type: 'presence', event: 'untrack' }));
  return { socket, wire, channel, presence, seen, track, untrack };
}

/** `Presence.list` as `{ id: [payload without phx_ref] }`. */
const listed = (presence) =>
  Object.fromEntries(
    presence.list((id, { metas }) => [id, metas.map(({ phx_ref, phx_ref_prev, ...rest }) => rest)]),
  );

test('phoenix.js: join, track, and Presence onSync/onJoin/onLeave/list', async (t) => {
  const room = newRoom();
  const a = await phxMember(t, room, { key: 'ann' });
  const b = await phxMember(t, room, { key: 'ben' });
  assert.deepEqual(await a.track({ name: 'Ann' }), { status: 'ok', response: {} });
  assert.deepEqual(await b.track({ name: 'Ben' }), { status: 'ok', response: {} });

  const expected = { ann: [{ name: 'Ann' }], ben: [{ name: 'Ben' }] };
  for (const m of [a, b]) {
    await waitFor(
      () => JSON.stringify(listed(m.presence)) === JSON.stringify(expected),
      5000,
      'both in Presence.list',
      () => JSON.stringify(listed(m.presence)),
    );
    assert.ok(m.seen.syncs > 0, 'onSync fired');
  }
  const joinOfBen = a.seen.joins.find((j) => j.id === 'ben');
  assert.equal(joinOfBen.current, undefined, 'ben was new');
  assert.equal(joinOfBen.joined.metas[0].name, 'Ben');
  assert.match(joinOfBen.joined.metas[0].phx_ref, PHX_REF);

  assert.deepEqual(await b.untrack(), { status: 'ok', response: {} });
  const leave = await waitFor(() => a.seen.leaves.find((l) => l.id === 'ben'), 5000, 'onLeave for ben');
  assert.equal(leave.left.metas[0].name, 'Ben');
  assert.deepEqual(leave.current.metas, []);
  await waitFor(() => JSON.stringify(listed(a.presence)) === JSON.stringify({ ann: [{ name: 'Ann' }] }), 5000, 'ben gone');

  // Leaving the channel drops the presence as well.
  await replyOf(a.channel.leave());
  await waitFor(() => JSON.stringify(listed(b.presence)) === '{}', 5000, 'ann gone after her leave');
});

test('phoenix.js: broadcast push reaches the others, with ack when asked', async (t) => {
  const room = newRoom();
  const a = await phxMember(t, room, { key: 'a', ack: true });
  const b = await phxMember(t, room, { key: 'b' });
  const reply = await replyOf(a.channel.push('broadcast', { type: 'broadcast', event: 'e', payload: { n: 1 } }));
  assert.deepEqual(reply, { status: 'ok', response: {} });
  const got = await waitFor(() => b.seen.broadcasts[0], 5000, 'the broadcast at b');
  assert.deepEqual(got, { type: 'broadcast', event: 'e', payload: { n: 1 } });
  assert.equal(a.seen.broadcasts.length, 0, 'self is false');
});

test('phoenix.js and supabase-js in one room: presence both ways, broadcast to supabase-js', async (t) => {
  const room = newRoom();
  const phx = await phxMember(t, room, { key: 'phoenix-user' });
  assert.equal((await phx.track({ via: 'phoenix.js' })).status, 'ok');

  const sb = supabaseClient(server, t);
  const channel = sb.supabase.channel(room, { config: { presence: { key: 'supabase-user' } } });
  const rec = observe(channel);
  let tracked;
  await subscribe(channel, rec, { onSubscribed: () => (tracked = channel.track({ via: 'supabase-js' })) });
  assert.equal(await tracked, 'ok');

  await waitFor(
    () => JSON.stringify(listed(phx.presence)) === JSON.stringify({ 'phoenix-user': [{ via: 'phoenix.js' }], 'supabase-user': [{ via: 'supabase-js' }] }),
    5000,
    'phoenix.js sees both',
    () => JSON.stringify(listed(phx.presence)),
  );
  await waitFor(
    () => channel.presenceState()['phoenix-user']?.[0]?.via === 'phoenix.js',
    5000,
    'supabase-js sees the phoenix.js user',
  );

  phx.channel.push('broadcast', { type: 'broadcast', event: 'ping', payload: { from: 'phoenix.js' } });
  const got = await waitFor(() => rec.broadcasts.find((b) => b.event === 'ping'), 5000, 'broadcast at supabase-js');
  assert.deepEqual(got, { type: 'broadcast', event: 'ping', payload: { from: 'phoenix.js' } });
});

test('phoenix.js receives broadcasts from a 1.0.0 realtime-js client as text', async (t) => {
  const room = newRoom();
  const phx = await phxMember(t, room, { key: 'p' });
  const { realtime } = realtimeClient(server, t, { vsn: '1.0.0' });
  const channel = realtime.channel(room);
  await subscribe(channel, observe(channel, { presence: false }));
  await channel.send({ type: 'broadcast', event: 'from-v1', payload: { ok: true } });
  const got = await waitFor(() => phx.seen.broadcasts[0], 5000, 'the broadcast at phoenix.js');
  assert.deepEqual(got, { type: 'broadcast', event: 'from-v1', payload: { ok: true } });
  assert.ok(phx.wire.received().every((f) => !f.binary));
});

test('phoenix.js: a topic outside realtime:* is refused with "unmatched topic"', async (t) => {
  const { socket } = phoenixSocket(server, t);
  const channel = socket.channel('room:lobby', {});
  const reply = await replyOf(channel.join());
  assert.deepEqual(reply, { status: 'error', response: { reason: 'unmatched topic' } });
});
