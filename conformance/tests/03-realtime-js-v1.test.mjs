// @supabase/realtime-js used directly with serializer 1.0.0 (JSON objects, as realtime-js
// before 2.91 spoke), sharing channels with 2.0.0 supabase-js clients.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { useServer } from '../lib/harness.mjs';
import { supabaseClient, realtimeClient, observe, subscribe, stateWithoutRefs, PHX_REF } from '../lib/clients.mjs';
import { waitFor } from '../lib/wait.mjs';

const server = useServer();

let rooms = 0;
const newRoom = () => `mixed-${process.pid}-${++rooms}`;

/** A member of `room` with presence key `key`; `vsn` '1.0.0' uses RealtimeClient directly. */
async function member(t, room, { vsn, key, payload, self = false }) {
  const client = vsn === '1.0.0' ? realtimeClient(server, t, { vsn }) : supabaseClient(server, t);
  const owner = client.supabase ?? client.realtime;
  const channel = owner.channel(room, { config: { presence: { key }, broadcast: { self } } });
  const rec = observe(channel);
  let tracked;
  await subscribe(channel, rec, { onSubscribed: () => (tracked = channel.track(payload)) });
  assert.equal(await tracked, 'ok');
  return { ...client, channel, rec };
}

const waitState = (m, expected) =>
  waitFor(
    () => isDeepStrictEqual(stateWithoutRefs(m.channel), expected),
    5000,
    `state ${JSON.stringify(expected)}`,
    () => JSON.stringify(m.channel.presenceState()),
  );

const v1Frames = (m) => m.wire.received().map((f) => JSON.parse(f.data));

test('the 1.0.0 client connects with vsn=1.0.0 and speaks JSON objects', async (t) => {
  const room = newRoom();
  const old = await member(t, room, { vsn: '1.0.0', key: 'old', payload: { v: 1 } });
  assert.match(old.wire.socket.url, /[?&]vsn=1\.0\.0(&|$)/);
  const frames = v1Frames(old);
  assert.ok(frames.every((m) => !Array.isArray(m) && typeof m === 'object'), 'every frame is a JSON object');
  const reply = frames.find((m) => m.event === 'phx_reply');
  assert.deepEqual(reply.payload, { status: 'ok', response: { postgres_changes: [] } });
  assert.equal(reply.topic, `realtime:${room}`);
  const state = frames.find((m) => m.event === 'presence_state');
  assert.ok(state, 'presence_state arrives');
  assert.equal(state.ref, null);
  assert.ok(frames.every((m) => !('join_ref' in m)), 'no join_ref in 1.0.0 server frames');
});

test('presence and broadcast between a 1.0.0 and a 2.0.0 client in one channel', async (t) => {
  const room = newRoom();
  const old = await member(t, room, { vsn: '1.0.0', key: 'old', payload: { client: 'realtime-js 1.0.0' } });
  const cur = await member(t, room, { key: 'new', payload: { client: 'supabase-js 2.0.0' } });
  const expected = { old: [{ client: 'realtime-js 1.0.0' }], new: [{ client: 'supabase-js 2.0.0' }] };
  await waitState(old, expected);
  await waitState(cur, expected);
  assert.deepEqual(old.channel.presenceState(), cur.channel.presenceState(), 'same refs on both serializers');
  for (const metas of Object.values(old.channel.presenceState())) assert.match(metas[0].presence_ref, PHX_REF);

  const diff = v1Frames(old).find((m) => m.event === 'presence_diff' && m.payload.joins.new);
  assert.equal(diff.ref, null);
  assert.equal(diff.topic, `realtime:${room}`);
  assert.deepEqual(diff.payload.leaves, {});

  await old.channel.send({ type: 'broadcast', event: 'hello', payload: { from: 'old' } });
  await cur.channel.send({ type: 'broadcast', event: 'hello', payload: { from: 'new' } });
  const toCur = await waitFor(() => cur.rec.broadcasts.find((b) => b.event === 'hello'), 5000, 'broadcast to 2.0.0');
  const toOld = await waitFor(() => old.rec.broadcasts.find((b) => b.event === 'hello'), 5000, 'broadcast to 1.0.0');
  assert.deepEqual(toCur, { type: 'broadcast', event: 'hello', payload: { from: 'old' } });
  assert.deepEqual(toOld, { type: 'broadcast', event: 'hello', payload: { from: 'new' } });
});

test('updates cross serializers as join + leave for the same key', async (t) => {
  const room = newRoom();
  const old = await member(t, room, { vsn: '1.0.0', key: 'old', payload: { s: 'a' } });
  const cur = await member(t, room, { key: 'new', payload: { s: 'b' } });
  await waitState(old, { old: [{ s: 'a' }], new: [{ s: 'b' }] });

  let from = old.rec.presence.length;
  assert.equal(await cur.channel.track({ s: 'b2' }), 'ok');
  await waitState(old, { old: [{ s: 'a' }], new: [{ s: 'b2' }] });
  assert.deepEqual(
    old.rec.presence.slice(from).map((e) => `${e.event}:${e.key}`),
    ['join:new', 'leave:new'],
  );

  from = cur.rec.presence.length;
  assert.equal(await old.channel.track({ s: 'a2' }), 'ok');
  await waitState(cur, { old: [{ s: 'a2' }], new: [{ s: 'b2' }] });
  assert.deepEqual(
    cur.rec.presence.slice(from).map((e) => `${e.event}:${e.key}`),
    ['join:old', 'leave:old'],
  );
  const update = v1Frames(old).filter((m) => m.event === 'presence_diff').at(-1);
  const meta = update.payload.joins.old.metas[0];
  assert.equal(meta.s, 'a2');
  assert.equal(meta.phx_ref_prev, update.payload.leaves.old.metas[0].phx_ref);
});

test('a 1.0.0 client leaving: reply, phx_close with the join ref, and a leave for the others', async (t) => {
  const room = newRoom();
  const old = await member(t, room, { vsn: '1.0.0', key: 'old', payload: {} });
  const cur = await member(t, room, { key: 'new', payload: {} });
  await waitState(cur, { old: [{}], new: [{}] });

  assert.equal(await old.realtime.removeChannel(old.channel), 'ok');
  await waitFor(() => cur.rec.leaves.some((l) => l.key === 'old'), 5000, 'leave of the 1.0.0 client');
  await waitState(cur, { new: [{}] });

  const sent = old.wire.sent().map((f) => JSON.parse(f.data));
  const join = sent.find((m) => m.event === 'phx_join');
  const leave = sent.find((m) => m.event === 'phx_leave');
  await waitFor(() => v1Frames(old).some((m) => m.event === 'phx_close'), 5000, 'phx_close after phx_leave');
  const frames = v1Frames(old);
  const replyAt = frames.findIndex((m) => m.event === 'phx_reply' && m.ref === leave.ref);
  const closeAt = frames.findIndex((m) => m.event === 'phx_close');
  const close = frames[closeAt];
  assert.ok(replyAt >= 0, 'the leave is answered');
  assert.deepEqual(frames[replyAt].payload, { status: 'ok', response: {} });
  assert.ok(closeAt > replyAt, 'phx_close follows the reply');
  assert.equal(close.ref, join.ref, 'phx_close carries the join ref');
  assert.deepEqual(close.payload, {});
});

for (const vsn of ['1.0.0', '2.0.0']) {
  test(`heartbeats are answered (vsn ${vsn})`, async (t) => {
    const { realtime } = realtimeClient(server, t, { vsn });
    const statuses = [];
    realtime.onHeartbeat((status) => statuses.push(status));
    const channel = realtime.channel(newRoom());
    await subscribe(channel, observe(channel, { presence: false }));
    await realtime.sendHeartbeat();
    await waitFor(() => statuses.includes('ok'), 5000, 'heartbeat ok', () => JSON.stringify(statuses));
    assert.deepEqual(statuses.slice(0, 2), ['sent', 'ok']);
  });
}
