// Connect-time refusals and protocol edges, seen through a raw `ws` WebSocket.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { useServer } from '../lib/harness.mjs';
import { startServer } from '../lib/server.mjs';
import { RawClient, refusedUpgrade, socketUrl, encodeUserBroadcastPush } from '../lib/raw.mjs';
import { realtimeClient, observe, subscribe } from '../lib/clients.mjs';
import { makeToken, signJwt, nowSeconds } from '../lib/tokens.mjs';
import { waitFor, withTimeout, staysFalse } from '../lib/wait.mjs';

const server = useServer();

const PATHS = ['/realtime/v1/websocket', '/socket/websocket'];
let rooms = 0;
const newTopic = () => `realtime:wire-${process.pid}-${++rooms}`;

async function expect401(params, error) {
  for (const path of PATHS) {
    const res = await refusedUpgrade(socketUrl(server, path, params));
    assert.equal(res.status, 401, `${path}: status`);
    assert.match(res.headers['content-type'], /^application\/json/, `${path}: content type`);
    assert.deepEqual(JSON.parse(res.body), { error }, `${path}: body`);
  }
}

test('connect without apikey: 401 API key is missing', async () => {
  await expect401({ vsn: '2.0.0' }, 'API key is missing');
});

test('connect with an expired apikey: 401 Token has expired', async () => {
  await expect401({ vsn: '2.0.0', apikey: makeToken(server.secret, { role: 'anon', expIn: -10 }) }, 'Token has expired');
});

test('connect with a malformed apikey: 401', async () => {
  await expect401({ vsn: '2.0.0', apikey: 'garbage' }, 'The token provided is not a valid JWT');
});

test('connect with an apikey signed by another secret: 401', async () => {
  await expect401({ vsn: '2.0.0', apikey: makeToken('another-secret', { role: 'anon' }) }, 'Failed to validate JWT signature');
});

test('connect with an apikey lacking role: 401', async () => {
  await expect401(
    { vsn: '2.0.0', apikey: signJwt(server.secret, { exp: nowSeconds() + 60 }) },
    'Fields `role` and `exp` are required in JWT',
  );
});

test('connect with an unknown vsn: 403', async () => {
  for (const vsn of ['3.0.0', '2.1.0', 'abc', '']) {
    for (const path of PATHS) {
      const res = await refusedUpgrade(socketUrl(server, path, { vsn, apikey: server.anonKey }));
      assert.equal(res.status, 403, `vsn=${JSON.stringify(vsn)} on ${path}`);
    }
  }
});

test('the apikey may come in the x-api-key header', async (t) => {
  const ws = new WebSocket(socketUrl(server, '/realtime/v1/websocket', { vsn: '2.0.0' }), {
    headers: { 'x-api-key': server.anonKey },
  });
  t.after(() => ws.terminate());
  await withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    }),
    5000,
    'the upgrade with x-api-key',
  );
});

test('no vsn means 1.0.0: JSON object frames', async (t) => {
  for (const path of PATHS) {
    const raw = await RawClient.connect(server, t, { vsn: undefined, path });
    assert.ok(!raw.ws.url.includes('vsn='));
    const ref = raw.send('phoenix', 'heartbeat', {});
    const reply = await raw.reply(ref);
    assert.deepEqual(reply.parsed, { topic: 'phoenix', event: 'phx_reply', payload: { status: 'ok', response: {} }, ref });
  }
});

test('vsn 2.0.0: heartbeat reply as an array', async (t) => {
  const raw = await RawClient.connect(server, t);
  const ref = raw.send('phoenix', 'heartbeat', {});
  const reply = await raw.reply(ref);
  assert.deepEqual(reply.parsed, [null, ref, 'phoenix', 'phx_reply', { status: 'ok', response: {} }]);
});

for (const vsn of ['1.0.0', '2.0.0']) {
  test(`unjoined topics (vsn ${vsn}): unmatched topic, but phx_leave is ok`, async (t) => {
    const raw = await RawClient.connect(server, t, { vsn });
    const topic = newTopic();
    for (const event of ['broadcast', 'presence', 'access_token']) {
      const ref = raw.send(topic, event, { type: event, event: 'x', payload: {} }, { joinRef: '99' });
      const reply = await raw.reply(ref);
      assert.deepEqual(reply.payload, { status: 'error', response: { reason: 'unmatched topic' } }, event);
      assert.equal(reply.topic, topic);
      if (vsn === '2.0.0') assert.equal(reply.join_ref, null, 'join_ref is null');
    }
    const leaveRef = raw.send(topic, 'phx_leave', {});
    assert.deepEqual((await raw.reply(leaveRef)).payload, { status: 'ok', response: {} });

    const joinRef = String(raw.nextRef++);
    raw.send('room:lobby', 'phx_join', {}, { joinRef, ref: joinRef });
    assert.deepEqual((await raw.reply(joinRef)).payload, { status: 'error', response: { reason: 'unmatched topic' } });

    const { reply } = await raw.join('realtime:', { config: {} });
    assert.deepEqual(reply.payload, {
      status: 'error',
      response: { reason: 'TopicNameRequired: You must provide a topic name' },
    });
  });
}

test('messages with a stale join_ref are ignored', async (t) => {
  const a = await RawClient.connect(server, t);
  const b = await RawClient.connect(server, t);
  const topic = newTopic();
  const config = { config: { broadcast: { ack: true, self: false }, presence: { key: '', enabled: false } } };
  const { joinRef } = await a.join(topic, config);
  await b.join(topic, config);

  const stale = a.send(topic, 'broadcast', { type: 'broadcast', event: 'stale', payload: {} }, { joinRef: 'not-' + joinRef });
  const fresh = a.send(topic, 'broadcast', { type: 'broadcast', event: 'fresh', payload: {} }, { joinRef });
  await a.reply(fresh);
  await b.waitFrame((f) => f.event === 'broadcast' && f.payload.event === 'fresh', 'the fresh broadcast');
  assert.ok(!a.frames.some((f) => f.ref === stale), 'no reply to the stale message');
  assert.ok(!b.frames.some((f) => f.event === 'broadcast' && f.payload.event === 'stale'), 'stale message not relayed');
  assert.ok(await staysFalse(() => a.frames.some((f) => f.ref === stale)));
});

test('a second join of the same topic closes the first (phx_close with the old join_ref)', async (t) => {
  const a = await RawClient.connect(server, t);
  const watcher = await RawClient.connect(server, t);
  const topic = newTopic();
  const config = { config: { presence: { key: 'dup', enabled: true } } };
  await watcher.join(topic, { config: { presence: { key: 'w', enabled: true } } });
  const first = await a.join(topic, config);
  const track = a.send(topic, 'presence', { type: 'presence', event: 'track', payload: { n: 1 } }, { joinRef: first.joinRef });
  await a.reply(track);
  await watcher.waitFrame((f) => f.event === 'presence_diff' && f.payload.joins.dup, 'the join of dup');

  const mark = a.frames.length;
  const second = await a.join(topic, config);
  assert.equal(second.reply.payload.status, 'ok');
  const after = a.frames.slice(mark);
  const close = after.find((f) => f.event === 'phx_close');
  assert.ok(close, 'phx_close for the first join');
  assert.equal(close.join_ref, first.joinRef);
  assert.equal(close.ref, first.joinRef);
  assert.ok(after.indexOf(close) < after.indexOf(after.find((f) => f.event === 'phx_reply')), 'close before the new reply');
  // The first join's presence is gone.
  await watcher.waitFrame((f) => f.event === 'presence_diff' && f.payload.leaves.dup, 'the leave of the first join');
});

test('a kind-3 binary push from a raw client reaches realtime-js clients on both serializers', async (t) => {
  const raw = await RawClient.connect(server, t);
  const topic = newTopic();
  const { joinRef } = await raw.join(topic, { config: { broadcast: { ack: true } } });
  const receivers = [];
  for (const vsn of ['1.0.0', '2.0.0']) {
    const { realtime } = realtimeClient(server, t, { vsn });
    const channel = realtime.channel(topic.slice('realtime:'.length));
    const rec = observe(channel, { presence: false });
    await subscribe(channel, rec);
    receivers.push(rec);
  }
  raw.sendBinary(encodeUserBroadcastPush({ joinRef, ref: '77', topic, event: 'hand-made', payload: { a: [1, 2] } }));
  const reply = await raw.reply('77');
  assert.deepEqual(reply.parsed, [joinRef, '77', topic, 'phx_reply', { status: 'ok', response: {} }]);
  for (const rec of receivers) {
    const got = await waitFor(() => rec.broadcasts[0], 5000, 'the hand-made broadcast');
    assert.deepEqual(got, { type: 'broadcast', event: 'hand-made', payload: { a: [1, 2] } });
  }
});

test('idle sockets are closed; heartbeating clients are not', async (t) => {
  const idle = await startServer(t, { idleTimeout: 1 });
  const silent = await RawClient.connect(idle, t);
  const { realtime, wire } = realtimeClient(idle, t, { heartbeatIntervalMs: 250 });
  const channel = realtime.channel('idle-room');
  await subscribe(channel, observe(channel, { presence: false }));
  const closed = await withTimeout(silent.closed, 5000, 'the silent socket to be closed');
  assert.equal(closed.code, 1000);
  assert.equal(wire.connections.length, 1, 'the heartbeating client kept its socket');
  assert.equal(wire.connections[0].closedAt, null);
  assert.equal(channel.state, 'joined');
});

test('presence messages: event case, non-object payloads, unknown events', async (t) => {
  const raw = await RawClient.connect(server, t);
  const topic = newTopic();
  const { joinRef } = await raw.join(topic, { config: { presence: { key: 'me', enabled: true } } });
  const call = async (payload) => (await raw.reply(raw.send(topic, 'presence', payload, { joinRef }))).payload;

  assert.deepEqual(await call({ type: 'presence', event: 'TRACK', payload: { a: 1 } }), { status: 'ok', response: {} });
  const diff = await raw.waitFrame((f) => f.event === 'presence_diff', 'the diff of the upper-case track');
  assert.equal(diff.payload.joins.me.metas[0].a, 1);
  assert.deepEqual(await call({ type: 'presence', event: 'track', payload: [1, 2] }), {
    status: 'error',
    response: { reason: 'Presence track payload must be a map' },
  });
  assert.deepEqual(await call({ type: 'presence', event: 'dance' }), { status: 'error', response: {} });
  assert.deepEqual(await call({ type: 'presence' }), { status: 'ok', response: {} });
});

test('a socket may join at most 100 channels', async (t) => {
  const raw = await RawClient.connect(server, t);
  const base = newTopic();
  const refs = [];
  for (let i = 0; i < 101; i++) {
    const ref = String(raw.nextRef++);
    raw.send(`${base}-${i}`, 'phx_join', { config: {} }, { joinRef: ref, ref });
    refs.push(ref);
  }
  const replies = [];
  for (const ref of refs) replies.push((await raw.reply(ref)).payload);
  assert.equal(replies.slice(0, 100).filter((r) => r.status === 'ok').length, 100);
  assert.deepEqual(replies[100], { status: 'error', response: { reason: 'ChannelRateLimitReached: Too many channels' } });
});
