// Broadcast over HTTP with the official clients: realtime-js's `channel.httpSend()` (the single
// endpoint, JSON or bytes) and `channel.send()` on a channel that is not joined (its fallback
// to the batch endpoint) both reach members subscribed with supabase-js.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RealtimeClient } from '@supabase/realtime-js';
import { useServer } from '../lib/harness.mjs';
import { supabaseClient, realtimeClient, observe, subscribe, closeRealtime, WireLog, recordingTransport } from '../lib/clients.mjs';
import { makeToken } from '../lib/tokens.mjs';
import { waitFor, staysFalse } from '../lib/wait.mjs';

const server = useServer();

let rooms = 0;
const newRoom = () => `http-${process.pid}-${++rooms}`;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A supabase-js member of `room` (vsn 2.0.0), subscribed. */
async function member(t, room) {
  const client = supabaseClient(server, t);
  const channel = client.supabase.channel(room);
  const rec = observe(channel, { presence: false });
  await subscribe(channel, rec);
  return { ...client, channel, rec };
}

const received = (m, event) => m.rec.broadcasts.filter((b) => b.event === event);
const waitBroadcast = (m, event) =>
  waitFor(() => received(m, event)[0], 5000, `broadcast "${event}"`, () => m.wire.dump());

/**
 * Runs `fn` with the REST requests a client makes recorded: `{ url, method, headers, body }`
 * (`headers` a `Headers`). realtime-js and supabase-js call the global `fetch` at request time.
 */
async function recordingFetch(fn) {
  const requests = [];
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (url, options = {}) => {
    requests.push({ url: String(url), method: options.method, headers: new Headers(options.headers), body: options.body });
    return realFetch(url, options);
  };
  try {
    return { result: await fn(), requests };
  } finally {
    globalThis.fetch = realFetch;
  }
}

test('httpSend() with a JSON payload reaches a subscribed supabase-js member', async (t) => {
  const room = newRoom();
  const m = await member(t, room);
  const sender = supabaseClient(server, t);
  const channel = sender.supabase.channel(room);
  const payload = { text: 'héllo ☕', n: 1, nested: { list: [1, null, true] } };

  const { result, requests } = await recordingFetch(() => channel.httpSend('cursor', payload));
  assert.deepEqual(result, { success: true });

  const got = await waitBroadcast(m, 'cursor');
  assert.equal(got.type, 'broadcast');
  assert.deepEqual(got.payload, payload);
  // As Supabase sends it: a binary user broadcast (kind 4) with a JSON body and no metadata.
  assert.equal(got.meta, undefined, 'the single route sends no meta');
  const binary = m.wire.received().filter((f) => f.binary);
  assert.equal(binary.length, 1, m.wire.dump());
  assert.equal(binary[0].data[0], 4, 'kind 4');
  assert.equal(binary[0].data[4], 1, 'JSON encoding');

  // What realtime-js sent: the single endpoint under /realtime/v1, with its socket's query.
  assert.equal(requests.length, 1);
  const url = new URL(requests[0].url);
  assert.equal(url.pathname, `/realtime/v1/api/broadcast/${room}/events/cursor`);
  assert.equal(url.searchParams.get('vsn'), '2.0.0');
  assert.equal(requests[0].headers.get('content-type'), 'application/json');
  assert.ok(requests[0].headers.get('apikey'), 'the key goes in a header');
  // The sender never joined: nothing went over its socket.
  assert.equal(sender.wire.sent().length, 0);
});

test('httpSend() with bytes arrives as an ArrayBuffer', async (t) => {
  const room = newRoom();
  const m = await member(t, room);
  const sender = supabaseClient(server, t);
  const bytes = new Uint8Array([0, 1, 2, 250, 255]);
  assert.deepEqual(await sender.supabase.channel(room).httpSend('blob', bytes), { success: true });
  const got = await waitBroadcast(m, 'blob');
  assert.ok(got.payload instanceof ArrayBuffer, `an ArrayBuffer, got ${Object.prototype.toString.call(got.payload)}`);
  assert.deepEqual([...new Uint8Array(got.payload)], [...bytes]);
  const frames = m.wire.received().filter((f) => f.binary);
  assert.equal(frames.at(-1).data[0], 4, 'a binary user broadcast (kind 4)');
});

test('send() on a channel that is not joined falls back to the batch endpoint', async (t) => {
  const room = newRoom();
  const a = await member(t, room);
  const b = await member(t, room);
  const sender = supabaseClient(server, t);
  const channel = sender.supabase.channel(room);
  const payload = { x: 3, y: 4 };

  const warn = console.warn;
  console.warn = () => {}; // realtime-js warns that this fallback will be deprecated
  let sent;
  try {
    sent = await recordingFetch(() => channel.send({ type: 'broadcast', event: 'moved', payload }));
  } finally {
    console.warn = warn;
  }
  assert.equal(sent.result, 'ok');
  for (const m of [a, b]) {
    const got = await waitBroadcast(m, 'moved');
    assert.deepEqual({ ...got, meta: undefined }, { type: 'broadcast', event: 'moved', payload, meta: undefined });
    assert.match(got.meta.id, UUID);
  }

  assert.equal(sent.requests.length, 1);
  const request = sent.requests[0];
  assert.equal(new URL(request.url).pathname, '/realtime/v1/api/broadcast');
  assert.deepEqual(JSON.parse(request.body), { messages: [{ topic: room, event: 'moved', payload, private: false }] });
  assert.equal(sender.wire.sent().length, 0, 'nothing over the socket');
  assert.ok(await staysFalse(() => received(a, 'moved').length > 1), 'delivered once');
});

test('a client on /socket uses /api/broadcast, for both calls', async (t) => {
  const room = newRoom();
  const m = await member(t, room);
  const wire = new WireLog();
  const realtime = new RealtimeClient(`${server.wsUrl}/socket`, {
    params: { apikey: server.anonKey },
    transport: recordingTransport(wire),
  });
  t.after(() => closeRealtime(realtime));
  const channel = realtime.channel(room);

  const single = await recordingFetch(() => channel.httpSend('one', { n: 1 }));
  assert.deepEqual(single.result, { success: true });
  assert.equal(new URL(single.requests[0].url).pathname, `/api/broadcast/${room}/events/one`);
  assert.deepEqual((await waitBroadcast(m, 'one')).payload, { n: 1 });

  const warn = console.warn;
  console.warn = () => {};
  let batch;
  try {
    batch = await recordingFetch(() => channel.send({ type: 'broadcast', event: 'two', payload: { n: 2 } }));
  } finally {
    console.warn = warn;
  }
  assert.equal(batch.result, 'ok');
  assert.equal(new URL(batch.requests[0].url).pathname, '/api/broadcast');
  assert.deepEqual((await waitBroadcast(m, 'two')).payload, { n: 2 });
});

test('refusals reach the caller: a bad key and a non-JSON body', async (t) => {
  const room = newRoom();
  const m = await member(t, room);
  const expired = makeToken(server.secret, { role: 'anon', expIn: -60 });
  const { realtime } = realtimeClient(server, t, { apikey: expired });
  const channel = realtime.channel(room);
  await assert.rejects(channel.httpSend('nope', { n: 1 }), /Unauthorized/);

  const warn = console.warn;
  console.warn = () => {};
  try {
    assert.equal(await channel.send({ type: 'broadcast', event: 'nope', payload: {} }), 'error');
  } finally {
    console.warn = warn;
  }

  // The official client only sends JSON or bytes; anything else gets Supabase's 415.
  const res = await fetch(`${server.httpUrl}/realtime/v1/api/broadcast/${room}/events/nope`, {
    method: 'POST',
    headers: { apikey: server.anonKey, 'Content-Type': 'text/plain' },
    body: 'hello',
  });
  assert.equal(res.status, 415);
  assert.deepEqual(await res.json(), { error: 'Unsupported Media Type. Use application/json or application/octet-stream' });
  assert.ok(await staysFalse(() => received(m, 'nope').length > 0), 'nothing was delivered');
});
