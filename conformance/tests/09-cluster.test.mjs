// Cluster mode with the official clients: two headcount nodes sharing one real redis-server,
// supabase-js (2.0.0) and realtime-js (1.0.0) clients on different nodes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { releaseTimersAfterFile } from '../lib/harness.mjs';
import { startServer, freePort, newSecret } from '../lib/server.mjs';
import { supabaseClient, realtimeClient, observe, subscribe, keysOf } from '../lib/clients.mjs';
import { waitFor } from '../lib/wait.mjs';

releaseTimersAfterFile();

/** A redis-server on a free port, without persistence, killed at teardown. */
async function startRedis(t) {
  const port = await freePort();
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  t.after(() => child.kill('SIGKILL'));
  let out = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${out}`)), 5000);
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('error', (e) => reject(new Error(`cannot run redis-server (apt-get install redis-server): ${e.message}`)));
  });
  return `redis://127.0.0.1:${port}/`;
}

async function cluster(t) {
  const redis = await startRedis(t);
  const secret = newSecret();
  const env = { HEADCOUNT_REDIS_URL: redis, HEADCOUNT_NODE_TIMEOUT: '2' };
  const a = await startServer(t, { secret, env });
  const b = await startServer(t, { secret, env });
  return { a, b };
}

async function member(t, server, room, key, payload, realtimeOptions) {
  const client = supabaseClient(server, t, realtimeOptions ? { realtime: realtimeOptions } : {});
  const channel = client.supabase.channel(room, { config: { presence: { key }, broadcast: { self: false } } });
  const rec = observe(channel);
  await subscribe(channel, rec, { onSubscribed: () => channel.track(payload) });
  return { ...client, channel, rec };
}

test('clients on two nodes see each other: presence, updates and broadcasts', async (t) => {
  const { a, b } = await cluster(t);
  const room = `cluster-${process.pid}-1`;
  const alice = await member(t, a, room, 'alice', { on: 'a' });
  const bob = await member(t, b, room, 'bob', { on: 'b' });
  for (const m of [alice, bob]) {
    await waitFor(() => keysOf(m.channel).join() === 'alice,bob', 10000, 'both nodes show both members', () =>
      JSON.stringify(m.channel.presenceState()),
    );
  }
  assert.equal(bob.channel.presenceState().alice[0].on, 'a');

  // An update on node A reaches node B as one join and one leave.
  const from = bob.rec.presence.length;
  assert.equal(await alice.channel.track({ on: 'a', status: 'away' }), 'ok');
  await waitFor(() => bob.channel.presenceState().alice?.[0]?.status === 'away', 10000, 'the update crosses');
  assert.deepEqual(bob.rec.presence.slice(from).map((e) => `${e.event}:${e.key}`), ['join:alice', 'leave:alice']);

  // Broadcasts cross both ways (supabase-js 2.0.0 sends them as binary frames).
  assert.equal(await alice.channel.send({ type: 'broadcast', event: 'hello', payload: { from: 'a' } }), 'ok');
  await waitFor(() => bob.rec.broadcasts.some((m) => m.payload?.from === 'a'), 10000, 'A → B broadcast');
  assert.equal(await bob.channel.send({ type: 'broadcast', event: 'hello', payload: { from: 'b' } }), 'ok');
  await waitFor(() => alice.rec.broadcasts.some((m) => m.payload?.from === 'b'), 10000, 'B → A broadcast');
  assert.equal(alice.rec.broadcasts.filter((m) => m.payload?.from === 'a').length, 0, 'self: false holds across nodes');
});

test('a 1.0.0 realtime-js client on one node and supabase-js on the other', async (t) => {
  const { a, b } = await cluster(t);
  const room = `cluster-${process.pid}-2`;
  const { realtime } = realtimeClient(a, t, { vsn: '1.0.0' });
  const old = realtime.channel(room, { config: { presence: { key: 'legacy' } } });
  const oldRec = observe(old);
  await subscribe(old, oldRec, { onSubscribed: () => old.track({ v: 1 }) });
  const modern = await member(t, b, room, 'modern', { v: 2 });
  await waitFor(() => keysOf(old).join() === 'legacy,modern' && keysOf(modern.channel).join() === 'legacy,modern', 10000, 'presence crosses serializers and nodes');
  await modern.channel.send({ type: 'broadcast', event: 'bin', payload: { n: 7 } });
  await waitFor(() => oldRec.broadcasts.some((m) => m.payload?.n === 7), 10000, 'a binary push on B reaches a 1.0.0 client on A as JSON');
});

test('a node killed: its members leave the other node within the node timeout', async (t) => {
  const { a, b } = await cluster(t);
  const room = `cluster-${process.pid}-3`;
  const alice = await member(t, a, room, 'alice', {});
  const bob = await member(t, b, room, 'bob', {});
  await waitFor(() => keysOf(bob.channel).join() === 'alice,bob', 10000, 'both present');
  const started = Date.now();
  await a.kill();
  await waitFor(() => keysOf(bob.channel).join() === 'bob', 8000, 'alice leaves after her node dies');
  const took = Date.now() - started;
  assert.ok(took < 2000 + 3000, `within the 2 s node timeout (+ margin): ${took} ms`);
  assert.ok(alice.rec.statuses.length > 0);
});

test('a node stopped cleanly: its members leave at once and its clients reconnect elsewhere', async (t) => {
  const { a, b } = await cluster(t);
  const room = `cluster-${process.pid}-4`;
  await member(t, a, room, 'alice', {});
  const bob = await member(t, b, room, 'bob', {});
  await waitFor(() => keysOf(bob.channel).join() === 'alice,bob', 10000, 'both present');
  const started = Date.now();
  await a.stop('SIGTERM');
  await waitFor(() => keysOf(bob.channel).join() === 'bob', 3000, 'alice leaves at once on a clean stop');
  assert.ok(Date.now() - started < 3000);
});
