// Broadcast with supabase-js (2.0.0: binary user-broadcast frames) and realtime-js with
// serializer 1.0.0 (JSON text), including across serializers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServer } from '../lib/harness.mjs';
import { supabaseClient, realtimeClient, observe, subscribe } from '../lib/clients.mjs';
import { decodeUserBroadcast } from '../lib/raw.mjs';
import { waitFor, staysFalse } from '../lib/wait.mjs';

const server = useServer();

let rooms = 0;
const newRoom = () => `broadcast-${process.pid}-${++rooms}`;

/**
 * A subscribed member of `room`. `kind`: 'supabase' (supabase-js, vsn 2.0.0), 'v1'
 * (RealtimeClient with vsn 1.0.0). `self` and `ack` are the channel's broadcast options.
 */
async function member(t, room, { kind = 'supabase', self = false, ack = false } = {}) {
  const client = kind === 'supabase' ? supabaseClient(server, t) : realtimeClient(server, t, { vsn: '1.0.0' });
  const owner = client.supabase ?? client.realtime;
  const channel = owner.channel(room, { config: { broadcast: { self, ack } } });
  const rec = observe(channel, { presence: false });
  await subscribe(channel, rec);
  return { ...client, channel, rec };
}

const received = (m, event) => m.rec.broadcasts.filter((b) => b.event === event);
const waitBroadcast = (m, event, n = 1) =>
  waitFor(() => received(m, event).length >= n && received(m, event)[n - 1], 5000, `broadcast "${event}" #${n}`, () =>
    m.wire.dump(),
  );

const PAYLOAD = {
  text: 'héllo ☕ 👋',
  n: 42,
  f: -1.5,
  nested: { list: [1, 'two', null, true, { deep: [] }] },
  empty: {},
  nothing: null,
};

test('self: false — the others receive it, the sender does not', async (t) => {
  const room = newRoom();
  const a = await member(t, room);
  const b = await member(t, room);
  const c = await member(t, room);
  assert.equal(await a.channel.send({ type: 'broadcast', event: 'msg', payload: PAYLOAD }), 'ok');
  for (const m of [b, c]) {
    const got = await waitBroadcast(m, 'msg');
    assert.deepEqual(got, { type: 'broadcast', event: 'msg', payload: PAYLOAD });
  }
  assert.ok(await staysFalse(() => received(a, 'msg').length > 0), 'the sender does not get its own message');
});

test('self: true — the sender receives its own message too', async (t) => {
  const room = newRoom();
  const a = await member(t, room, { self: true });
  const b = await member(t, room);
  await a.channel.send({ type: 'broadcast', event: 'echo', payload: { x: 1 } });
  assert.deepEqual(await waitBroadcast(a, 'echo'), { type: 'broadcast', event: 'echo', payload: { x: 1 } });
  assert.deepEqual(await waitBroadcast(b, 'echo'), { type: 'broadcast', event: 'echo', payload: { x: 1 } });
  // Exactly once each.
  assert.ok(await staysFalse(() => received(a, 'echo').length > 1 || received(b, 'echo').length > 1));
});

test('2.0.0 wire: realtime-js pushes binary kind 3, the server delivers binary kind 4', async (t) => {
  const room = newRoom();
  const a = await member(t, room);
  const b = await member(t, room);
  await a.channel.send({ type: 'broadcast', event: 'cursor', payload: { x: 1, y: 2 } });
  await waitBroadcast(b, 'cursor');

  const pushed = a.wire.sent().filter((f) => f.binary);
  assert.equal(pushed.length, 1, 'one binary frame sent');
  assert.equal(pushed[0].data[0], 3, 'kind 3 (user broadcast push)');
  const delivered = b.wire.received().filter((f) => f.binary).map((f) => decodeUserBroadcast(f.data));
  assert.equal(delivered.length, 1, 'one binary frame received');
  assert.equal(delivered[0].kind, 4);
  assert.equal(delivered[0].topic, `realtime:${room}`);
  assert.equal(delivered[0].event, 'cursor');
  assert.equal(delivered[0].encoding, 1, 'JSON encoding');
  assert.deepEqual(delivered[0].payload, { x: 1, y: 2 });
});

test('ack: true — send() resolves ok on the server reply (binary push, text reply)', async (t) => {
  const room = newRoom();
  const a = await member(t, room, { ack: true });
  const b = await member(t, room);
  assert.equal(await a.channel.send({ type: 'broadcast', event: 'acked', payload: { k: 'v' } }), 'ok');
  assert.deepEqual(await waitBroadcast(b, 'acked'), { type: 'broadcast', event: 'acked', payload: { k: 'v' } });

  // The reply echoes the join_ref and ref carried in the binary header.
  const push = a.wire.sent().find((f) => f.binary).data;
  const [jrLen, refLen] = [push[1], push[2]];
  const joinRef = push.subarray(7, 7 + jrLen).toString();
  const ref = push.subarray(7 + jrLen, 7 + jrLen + refLen).toString();
  const reply = a.wire
    .received()
    .filter((f) => !f.binary)
    .map((f) => JSON.parse(f.data))
    .find((m) => m[3] === 'phx_reply' && m[1] === ref);
  assert.deepEqual(reply, [joinRef, ref, `realtime:${room}`, 'phx_reply', { status: 'ok', response: {} }]);
});

test('ack: false — no reply is sent for a broadcast', async (t) => {
  const room = newRoom();
  const a = await member(t, room);
  const b = await member(t, room);
  await a.channel.send({ type: 'broadcast', event: 'noack', payload: {} });
  await waitBroadcast(b, 'noack');
  const push = a.wire.sent().find((f) => f.binary).data;
  const ref = push.subarray(7 + push[1], 7 + push[1] + push[2]).toString();
  const replyTo = (wanted) =>
    a.wire
      .received()
      .filter((f) => !f.binary)
      .some((f) => {
        const m = JSON.parse(f.data);
        return m[3] === 'phx_reply' && m[1] === wanted;
      });
  assert.ok(await staysFalse(() => replyTo(ref)), 'no phx_reply to the broadcast');
});

test('1.0.0 text: JSON objects both ways, ack and self honoured', async (t) => {
  const room = newRoom();
  const a = await member(t, room, { kind: 'v1', ack: true, self: true });
  const b = await member(t, room, { kind: 'v1' });
  assert.equal(await a.channel.send({ type: 'broadcast', event: 'v1msg', payload: PAYLOAD }), 'ok');
  assert.deepEqual(await waitBroadcast(b, 'v1msg'), { type: 'broadcast', event: 'v1msg', payload: PAYLOAD });
  assert.deepEqual(await waitBroadcast(a, 'v1msg'), { type: 'broadcast', event: 'v1msg', payload: PAYLOAD });

  assert.ok(a.wire.frames.every((f) => !f.binary), 'no binary frames with 1.0.0');
  const frame = b.wire
    .received()
    .map((f) => JSON.parse(f.data))
    .find((m) => m.event === 'broadcast');
  assert.equal(frame.topic, `realtime:${room}`);
  assert.equal(frame.ref, null);
  assert.equal('join_ref' in frame, false, '1.0.0 server frames have no join_ref');
  assert.deepEqual(frame.payload, { type: 'broadcast', event: 'v1msg', payload: PAYLOAD });
  const sent = a.wire.sent().map((f) => JSON.parse(f.data)).find((m) => m.event === 'broadcast');
  const reply = a.wire
    .received()
    .map((f) => JSON.parse(f.data))
    .find((m) => m.event === 'phx_reply' && m.ref === sent.ref);
  assert.deepEqual(reply.payload, { status: 'ok', response: {} });
});

test('1.0.0 text: extra top-level fields of the broadcast are relayed', async (t) => {
  const room = newRoom();
  const a = await member(t, room, { kind: 'v1' });
  const b = await member(t, room, { kind: 'v1' });
  await a.channel.send({ type: 'broadcast', event: 'extra', payload: { p: 1 }, note: 'kept' });
  assert.deepEqual(await waitBroadcast(b, 'extra'), { type: 'broadcast', event: 'extra', payload: { p: 1 }, note: 'kept' });
});

test('across serializers: 2.0.0 sender to 1.0.0 receiver and back, payload equal', async (t) => {
  const room = newRoom();
  const v2 = await member(t, room);
  const v1 = await member(t, room, { kind: 'v1' });

  await v2.channel.send({ type: 'broadcast', event: 'to-v1', payload: PAYLOAD });
  assert.deepEqual(await waitBroadcast(v1, 'to-v1'), { type: 'broadcast', event: 'to-v1', payload: PAYLOAD });
  const v1frame = v1.wire.received().map((f) => JSON.parse(f.data)).find((m) => m.event === 'broadcast');
  assert.deepEqual(v1frame.payload, { type: 'broadcast', event: 'to-v1', payload: PAYLOAD }, 'JSON object frame for 1.0.0');

  await v1.channel.send({ type: 'broadcast', event: 'to-v2', payload: PAYLOAD });
  assert.deepEqual(await waitBroadcast(v2, 'to-v2'), { type: 'broadcast', event: 'to-v2', payload: PAYLOAD });
});

test('non-ASCII room and event names survive the binary header (byte lengths)', async (t) => {
  const room = `salle-été-☕-${process.pid}-${++rooms}`;
  const a = await member(t, room);
  const b = await member(t, room);
  const v1 = await member(t, room, { kind: 'v1' });
  await a.channel.send({ type: 'broadcast', event: 'événement-🎉', payload: { ok: 'ü' } });
  assert.deepEqual(await waitBroadcast(b, 'événement-🎉'), { type: 'broadcast', event: 'événement-🎉', payload: { ok: 'ü' } });
  assert.deepEqual(await waitBroadcast(v1, 'événement-🎉'), {
    type: 'broadcast',
    event: 'événement-🎉',
    payload: { ok: 'ü' },
  });
});

test('an ArrayBuffer payload travels between two 2.0.0 clients byte for byte', async (t) => {
  const room = newRoom();
  const a = await member(t, room);
  const b = await member(t, room);
  const v1 = await member(t, room, { kind: 'v1' });
  const bytes = new Uint8Array([0, 1, 2, 127, 128, 254, 255, 10, 13, 0]);
  await a.channel.send({ type: 'broadcast', event: 'blob', payload: bytes.buffer });
  const got = await waitBroadcast(b, 'blob');
  assert.equal(got.type, 'broadcast');
  assert.ok(got.payload instanceof ArrayBuffer, 'the receiver gets an ArrayBuffer');
  assert.deepEqual(new Uint8Array(got.payload), bytes);
  const frame = decodeUserBroadcast(b.wire.received().find((f) => f.binary).data);
  assert.equal(frame.encoding, 0, 'binary encoding');

  // A 1.0.0 client cannot receive binary; a JSON message sent after it is the barrier.
  await a.channel.send({ type: 'broadcast', event: 'after-blob', payload: {} });
  await waitBroadcast(v1, 'after-blob');
  assert.equal(received(v1, 'blob').length, 0, 'the binary message is not delivered to 1.0.0');
});

test('broadcasts stay in their room', async (t) => {
  const room = newRoom();
  const other = newRoom();
  const a = await member(t, room);
  const b = await member(t, room);
  const outsider = await member(t, other);
  await a.channel.send({ type: 'broadcast', event: 'private-ish', payload: {} });
  await waitBroadcast(b, 'private-ish');
  // Another message in the outsider's own room is the barrier.
  const peer = await member(t, other);
  await peer.channel.send({ type: 'broadcast', event: 'local', payload: {} });
  await waitBroadcast(outsider, 'local');
  assert.equal(received(outsider, 'private-ish').length, 0);
});

test('large broadcasts under the 3000 KB payload limit are delivered on both serializers', async (t) => {
  const room = newRoom();
  const a = await member(t, room, { ack: true });
  const b = await member(t, room);
  const v1 = await member(t, room, { kind: 'v1' });
  for (const size of [70_000, 600_000, 1_500_000]) {
    const event = `big-${size}`;
    const payload = { blob: 'x'.repeat(size) };
    assert.equal(await a.channel.send({ type: 'broadcast', event, payload }), 'ok', `${size}: ack`);
    for (const [name, m] of [['2.0.0', b], ['1.0.0', v1]]) {
      const got = await waitFor(
        () => received(m, event)[0],
        5000,
        `${size} bytes at the ${name} receiver`,
        () => `receiver sockets: ${JSON.stringify(m.wire.connections)}`,
      );
      assert.equal(got.payload.blob.length, size);
    }
  }
  assert.equal(b.wire.connections.length, 1, 'the 2.0.0 receiver kept its socket');
  assert.equal(v1.wire.connections.length, 1, 'the 1.0.0 receiver kept its socket');
});

test('a broadcast over the payload limit is refused (ack error) and not relayed', async (t) => {
  const room = newRoom();
  const a = await member(t, room, { ack: true });
  const b = await member(t, room);
  const result = await a.channel.send({ type: 'broadcast', event: 'huge', payload: { blob: 'x'.repeat(3_100_000) } });
  assert.equal(result, 'error');
  const reply = a.wire
    .received()
    .filter((f) => !f.binary)
    .map((f) => JSON.parse(f.data))
    .find((m) => m[3] === 'phx_reply' && m[4].status === 'error');
  assert.deepEqual(reply[4], { status: 'error', response: 'payload_size_exceeded' });
  assert.equal(await a.channel.send({ type: 'broadcast', event: 'small', payload: {} }), 'ok');
  await waitBroadcast(b, 'small');
  assert.equal(received(b, 'huge').length, 0);
  assert.equal(a.channel.state, 'joined', 'the sender stays joined');
});

test('an ArrayBuffer to self with ack', async (t) => {
  const room = newRoom();
  const a = await member(t, room, { self: true, ack: true });
  const bytes = new Uint8Array([9, 8, 7, 0, 255]);
  assert.equal(await a.channel.send({ type: 'broadcast', event: 'mine', payload: bytes.buffer }), 'ok');
  const got = await waitBroadcast(a, 'mine');
  assert.deepEqual(new Uint8Array(got.payload), bytes);
});

test('quotes, backslashes and control characters in names and payloads survive both serializers', async (t) => {
  const weird = 'q"uo\\te/\u0001\u001f\t\n\u2028 ☕ 𝄞 <>&\u007f';
  const room = `room ${weird} ${++rooms}`;
  const members = [];
  for (const kind of ['supabase', 'v1']) {
    const client = kind === 'supabase' ? supabaseClient(server, t) : realtimeClient(server, t, { vsn: '1.0.0' });
    const owner = client.supabase ?? client.realtime;
    const channel = owner.channel(room, { config: { presence: { key: `${kind} ${weird}` } } });
    const rec = observe(channel);
    let tracked;
    await subscribe(channel, rec, { onSubscribed: () => (tracked = channel.track({ v: weird, [weird]: 1 })) });
    assert.equal(await tracked, 'ok');
    members.push({ ...client, channel, rec, kind });
  }
  const event = `ev ${weird}`;
  for (const m of members) await m.channel.send({ type: 'broadcast', event, payload: { from: m.kind, w: weird } });
  for (const [m, other] of [members, members.slice().reverse()]) {
    const got = await waitBroadcast(m, event);
    assert.deepEqual(got, { type: 'broadcast', event, payload: { from: other.kind, w: weird } });
    await waitFor(() => Object.keys(m.channel.presenceState()).length === 2, 5000, 'both presences');
    assert.deepEqual(m.channel.presenceState()[`${other.kind} ${weird}`][0].v, weird);
  }
  assert.deepEqual(members[0].channel.presenceState(), members[1].channel.presenceState());
});

test('a burst of broadcasts arrives complete and in order at every receiver', async (t) => {
  const room = newRoom();
  const sender = await member(t, room);
  const receivers = [];
  for (const kind of ['supabase', 'supabase', 'supabase', 'v1', 'v1']) receivers.push(await member(t, room, { kind }));
  const n = 200;
  for (let i = 0; i < n; i++) sender.channel.send({ type: 'broadcast', event: 'seq', payload: { i } });
  for (const r of receivers) {
    await waitFor(() => received(r, 'seq').length >= n, 10_000, `${n} messages`, () => `${received(r, 'seq').length} so far`);
    assert.deepEqual(
      received(r, 'seq').map((m) => m.payload.i),
      Array.from({ length: n }, (_, i) => i),
    );
  }
});
