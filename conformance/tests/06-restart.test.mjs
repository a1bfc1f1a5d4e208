// The server goes away and comes back on the same port with the same secret: supabase-js
// reconnects with its backoff, rejoins, the app re-tracks, and presence is whole again.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { startServer } from '../lib/server.mjs';
import { releaseTimersAfterFile } from '../lib/harness.mjs';
import { supabaseClient, observe, subscribe, waitForStatus, stateWithoutRefs } from '../lib/clients.mjs';
import { RawClient } from '../lib/raw.mjs';
import { waitFor, withTimeout } from '../lib/wait.mjs';

releaseTimersAfterFile();

const ROOM = 'restart-room';

/** A supabase-js member that tracks `{ user: key }` at every SUBSCRIBED, as apps do. */
async function member(t, server, key) {
  const client = supabaseClient(server, t);
  const channel = client.supabase.channel(ROOM, { config: { presence: { key } } });
  const rec = observe(channel);
  const tracks = [];
  await subscribe(channel, rec, { onSubscribed: () => tracks.push(channel.track({ user: key })) });
  assert.equal(await tracks[0], 'ok');
  return { ...client, channel, rec, tracks };
}

const BOTH = { alice: [{ user: 'alice' }], bob: [{ user: 'bob' }] };
const waitBoth = (m, what) =>
  waitFor(() => isDeepStrictEqual(stateWithoutRefs(m.channel), BOTH), 8000, what, () =>
    JSON.stringify(m.channel.presenceState()),
  );

async function restartScenario(t, signal, { failFirstAttempt = false } = {}) {
  const server = await startServer(t);
  const port = server.port;
  const alice = await member(t, server, 'alice');
  const bob = await member(t, server, 'bob');
  for (const m of [alice, bob]) await waitBoth(m, 'both present before the restart');
  const refsBefore = alice.channel.presenceState().bob[0].presence_ref;

  const attemptsBefore = alice.wire.connections.length;
  const exit = await server.stop(signal);
  if (signal === 'SIGKILL') assert.equal(exit.signal, 'SIGKILL');
  else assert.deepEqual(exit, { code: 0, signal: null }, `clean exit on ${signal}`);
  const lost = alice.wire.connections[attemptsBefore - 1];
  await waitFor(() => lost.closedAt, 5000, 'alice to notice the socket closed');
  if (signal !== 'SIGKILL') assert.equal(lost.code, 1001, 'the server said "going away"');
  for (const m of [alice, bob]) await waitForStatus(m.rec, 'CHANNEL_ERROR', 1, 5000);

  if (failFirstAttempt) {
    // Let the first reconnect attempt (after about 1 s) fail against the closed port.
    await waitFor(
      () => alice.wire.connections.length > attemptsBefore && alice.wire.connections.at(-1).closedAt,
      5000,
      'a failed reconnect attempt',
    );
  }
  await server.start();
  assert.equal(server.port, port, 'same port');

  for (const m of [alice, bob]) await waitForStatus(m.rec, 'SUBSCRIBED', 2, 12_000);
  for (const m of [alice, bob]) await waitBoth(m, 'both present after the restart');
  assert.notEqual(alice.channel.presenceState().bob[0].presence_ref, refsBefore, 'fresh presences');
  for (const m of [alice, bob]) assert.equal(await m.tracks[1], 'ok', 're-track after the rejoin');

  // The reconnect schedule: 1 s after the close, then 2 s after a failed attempt.
  const attempts = alice.wire.connections.slice(attemptsBefore);
  const firstDelay = attempts[0].createdAt - lost.closedAt;
  assert.ok(firstDelay >= 900 && firstDelay < 3000, `first attempt after ${firstDelay} ms`);
  if (failFirstAttempt) {
    assert.equal(attempts[0].opened, false, 'the first attempt failed');
    const secondDelay = attempts[1].createdAt - attempts[0].closedAt;
    assert.ok(secondDelay >= 1800 && secondDelay < 4500, `second attempt after ${secondDelay} ms`);
    assert.equal(attempts[1].opened, true);
  } else {
    assert.equal(attempts[0].opened, true, 'the first attempt succeeded');
  }

  // And the channel works: a broadcast goes through.
  await alice.channel.send({ type: 'broadcast', event: 'back', payload: { from: 'alice' } });
  await waitFor(() => bob.rec.broadcasts.some((b) => b.event === 'back'), 5000, 'broadcast after the restart');
}

test('restart after SIGKILL: reconnect, rejoin, re-track', async (t) => {
  await restartScenario(t, 'SIGKILL');
});

test('restart after SIGTERM, first reconnect attempt refused: backoff 1 s then 2 s', async (t) => {
  await restartScenario(t, 'SIGTERM', { failFirstAttempt: true });
});

test('SIGINT: sockets are closed with 1001 and the process exits 0', async (t) => {
  const server = await startServer(t);
  const raw = await RawClient.connect(server, t);
  const exit = await server.stop('SIGINT');
  assert.deepEqual(exit, { code: 0, signal: null });
  const closed = await withTimeout(raw.closed, 5000, 'the raw socket to close');
  assert.equal(closed.code, 1001);
});
