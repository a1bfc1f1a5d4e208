// Tokens: refresh with setAuth (access_token), expiry while joined, and refused joins.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServer } from '../lib/harness.mjs';
import { supabaseClient, realtimeClient, observe, subscribe, waitForStatus } from '../lib/clients.mjs';
import { makeToken, signJwt, nowSeconds, cliToken } from '../lib/tokens.mjs';
import { waitFor, staysFalse } from '../lib/wait.mjs';

const server = useServer();

let rooms = 0;
const newRoom = () => `auth-${process.pid}-${++rooms}`;

/**
 * A supabase-js client whose session token is `token` (a string, or a function returning the
 * current one), given through the `accessToken` option. supabase-js
 * hands the token to realtime-js asynchronously, and a channel subscribed before that joins
 * without it (the join is queued with its payload at subscribe time), so this waits for it.
 */
async function clientWithToken(t, token) {
  const current = typeof token === 'function' ? token : () => token;
  const client = supabaseClient(server, t, { accessToken: async () => current() });
  await waitFor(() => client.realtime.accessTokenValue === current(), 5000, 'supabase-js to pass the token to realtime-js');
  return client;
}

/** Joins `room` and tracks; returns the pieces. */
async function joined(t, room, { token, key, payload = {} } = {}) {
  const client = token ? await clientWithToken(t, token) : supabaseClient(server, t);
  const channel = client.supabase.channel(room, { config: { presence: { key: key ?? '' } } });
  const rec = observe(channel);
  let tracked;
  await subscribe(channel, rec, { onSubscribed: () => (tracked = channel.track(payload)) });
  assert.equal(await tracked, 'ok');
  return { ...client, channel, rec };
}

/** The decoded 2.0.0 text frames a client received / sent. */
const inFrames = (wire) => wire.received().filter((f) => !f.binary).map((f) => JSON.parse(f.data));
const outFrames = (wire) => wire.sent().filter((f) => !f.binary).map((f) => JSON.parse(f.data));

/** Subscribes and resolves with the first CHANNEL_ERROR's Error (fails on SUBSCRIBED). */
async function joinError(channel) {
  const rec = observe(channel, { presence: false });
  await assert.rejects(subscribe(channel, rec), /CHANNEL_ERROR/);
  const first = rec.statuses[0];
  assert.equal(first.status, 'CHANNEL_ERROR');
  return { error: first.error, rec };
}

test('setAuth(token) pushes access_token, gets no reply, and the channel keeps working', async (t) => {
  const room = newRoom();
  const a = await joined(t, room, { key: 'a', payload: { v: 1 } });
  const b = await joined(t, room, { key: 'b' });
  const fresh = makeToken(server.secret, { role: 'authenticated', sub: 'user-a', expIn: 600 });

  await a.realtime.setAuth(fresh);
  const push = await waitFor(
    () => outFrames(a.wire).find((m) => m[3] === 'access_token'),
    5000,
    'the access_token push',
  );
  assert.equal(push[2], `realtime:${room}`);
  assert.deepEqual(push[4], { access_token: fresh });
  assert.ok(
    await staysFalse(() => inFrames(a.wire).some((m) => m[3] === 'phx_reply' && m[1] === push[1])),
    'no reply to access_token',
  );

  // Still joined: broadcast both ways, presence updates.
  await a.channel.send({ type: 'broadcast', event: 'after-refresh', payload: { from: 'a' } });
  await b.channel.send({ type: 'broadcast', event: 'after-refresh', payload: { from: 'b' } });
  await waitFor(() => b.rec.broadcasts.some((m) => m.payload.from === 'a'), 5000, 'a → b');
  await waitFor(() => a.rec.broadcasts.some((m) => m.payload.from === 'b'), 5000, 'b → a');
  assert.equal(await a.channel.track({ v: 2 }), 'ok');
  await waitFor(() => b.channel.presenceState().a?.[0]?.v === 2, 5000, 'a updated at b');
  assert.equal(a.channel.state, 'joined');
  assert.equal(a.rec.system.length, 0);
});

test('a token that expires while joined: system error, then the channel is CLOSED', async (t) => {
  const room = newRoom();
  const watcher = await joined(t, room, { key: 'watcher' });
  // The session token comes from the app's accessToken callback, as with supabase-js auth.
  let session = makeToken(server.secret, { role: 'authenticated', expIn: 3 });
  const brief = await joined(t, room, { token: () => session, key: 'brief', payload: { here: true } });
  await waitFor(() => watcher.channel.presenceState().brief, 5000, 'brief present');

  const system = await waitFor(() => brief.rec.system[0], 6000, 'the system message', () => brief.wire.dump());
  assert.deepEqual(Object.keys(system).sort(), ['channel', 'extension', 'message', 'status']);
  assert.equal(system.extension, 'system');
  assert.equal(system.status, 'error');
  assert.equal(system.channel, room);
  assert.match(system.message, /^Token has expired \d+ seconds ago$/);
  await waitForStatus(brief.rec, 'CLOSED');
  assert.equal(brief.channel.state, 'closed');

  // On the wire: system (channel push, with the join ref), then phx_close (ref = join ref).
  const frames = inFrames(brief.wire).filter((m) => m[2] === `realtime:${room}`);
  const at = frames.findIndex((m) => m[3] === 'system');
  const joinRef = outFrames(brief.wire).find((m) => m[3] === 'phx_join')[0];
  assert.equal(frames[at][0], joinRef);
  assert.equal(frames[at][1], null);
  assert.deepEqual(
    frames.slice(at).find((m) => m[3] === 'phx_close'),
    [joinRef, joinRef, `realtime:${room}`, 'phx_close', {}],
  );

  // The others see the expired member go.
  await waitFor(() => watcher.rec.leaves.some((l) => l.key === 'brief'), 5000, 'leave of the expired member');
  assert.equal(watcher.channel.state, 'joined');

  // Only the channel was closed: with a new session token the same socket joins again.
  assert.equal(brief.wire.connections.length, 1);
  assert.equal(brief.wire.connections[0].closedAt, null, 'the socket is still open');
  session = makeToken(server.secret, { role: 'authenticated', expIn: 600 });
  await brief.realtime.setAuth();
  const again = brief.supabase.channel(room, { config: { presence: { key: 'brief' } } });
  const rec = observe(again);
  let tracked;
  await subscribe(again, rec, { onSubscribed: () => (tracked = again.track({ back: true })) });
  assert.equal(await tracked, 'ok');
  await waitFor(() => watcher.channel.presenceState().brief?.[0]?.back === true, 5000, 'brief back', () =>
    brief.wire.dump(),
  );
  assert.equal(brief.wire.connections.length, 1, 'no reconnect was needed');
});

test('a refreshed token outlives the original expiry (setAuth, and the accessToken callback)', async (t) => {
  const room = newRoom();
  const short = makeToken(server.secret, { role: 'authenticated', expIn: 3 });
  const long = makeToken(server.secret, { role: 'authenticated', expIn: 600 });
  const stale = await joined(t, room, { token: short, key: 'stale' });
  const renewed = await joined(t, room, { token: short, key: 'renewed' });
  // A 1.0.0 realtime-js client with the same short token, set by hand.
  const old = realtimeClient(server, t, { vsn: '1.0.0' });
  await old.realtime.setAuth(short);
  const oldChannel = old.realtime.channel(room, { config: { presence: { key: 'old-stale' } } });
  const oldRec = observe(oldChannel);
  await subscribe(oldChannel, oldRec);
  await renewed.realtime.setAuth(long);

  // supabase-js asks its accessToken callback again at every heartbeat and pushes a changed
  // token: the way sessions are refreshed in apps.
  let current = short;
  const rotating = supabaseClient(server, t, {
    accessToken: async () => current,
    realtime: { heartbeatIntervalMs: 300 },
  });
  await waitFor(() => rotating.realtime.accessTokenValue === short, 5000, 'the first token');
  const channel = rotating.supabase.channel(room, { config: { presence: { key: 'rotating' } } });
  const rec = observe(channel);
  let tracked;
  await subscribe(channel, rec, { onSubscribed: () => (tracked = channel.track({})) });
  assert.equal(await tracked, 'ok');
  current = long;
  await waitFor(
    () => outFrames(rotating.wire).some((m) => m[3] === 'access_token' && m[4].access_token === long),
    5000,
    'the heartbeat-driven access_token push',
  );

  // The members that did not refresh are closed at the original expiry ...
  await waitFor(() => stale.rec.system[0], 6000, 'the stale member to expire');
  await waitForStatus(stale.rec, 'CLOSED');
  await waitForStatus(oldRec, 'CLOSED');
  assert.match(oldRec.system[0].message, /^Token has expired \d+ seconds ago$/);
  const oldFrames = old.wire.received().map((f) => JSON.parse(f.data));
  const oldJoin = old.wire.sent().map((f) => JSON.parse(f.data)).find((m) => m.event === 'phx_join');
  const at = oldFrames.findIndex((m) => m.event === 'system');
  assert.deepEqual(oldFrames[at], {
    topic: `realtime:${room}`,
    event: 'system',
    payload: oldRec.system[0],
    ref: null,
  });
  // Diffs of the others may interleave; the close follows the system message.
  assert.deepEqual(
    oldFrames.slice(at).find((m) => m.event === 'phx_close'),
    { topic: `realtime:${room}`, event: 'phx_close', payload: {}, ref: oldJoin.ref },
  );
  // ... and the ones that did stay joined.
  for (const [name, m] of [['setAuth', renewed], ['callback', { channel, rec }]]) {
    assert.ok(await staysFalse(() => m.rec.system.length > 0), `${name}: no system message`);
    assert.equal(m.channel.state, 'joined', name);
    assert.equal(m.rec.count('CLOSED'), 0, name);
  }
  assert.equal(await renewed.channel.track({ still: 'here' }), 'ok');
  await waitFor(() => channel.presenceState().renewed?.[0]?.still === 'here', 5000, 'track seen after the expiry');
  assert.deepEqual(Object.keys(channel.presenceState()).sort(), ['renewed', 'rotating']);
});

test('refreshing with an invalid token closes the channel with the reason', async (t) => {
  const room = newRoom();
  const cases = [
    ['garbage', 'not-a-jwt', /^The token provided is not a valid JWT$/],
    ['expired', makeToken(server.secret, { expIn: -60 }), /^Token has expired \d+ seconds ago$/],
    ['wrong secret', makeToken('some-other-secret', {}), /^Failed to validate JWT signature$/],
  ];
  for (const [name, token, message] of cases) {
    const m = await joined(t, `${room}-${name.replace(' ', '-')}`);
    await m.realtime.setAuth(token);
    const system = await waitFor(() => m.rec.system[0], 5000, `system message (${name})`, () => m.wire.dump());
    assert.equal(system.status, 'error', name);
    assert.match(system.message, message, name);
    await waitForStatus(m.rec, 'CLOSED');
  }
});

test('join refused: expired token', async (t) => {
  const expired = makeToken(server.secret, { role: 'authenticated', expIn: -30 });
  const { supabase, wire } = await clientWithToken(t, expired);
  const room = newRoom();
  const { error } = await joinError(supabase.channel(room));
  const match = /^InvalidJWTToken: Token has expired (\d+) seconds ago$/.exec(error.message);
  assert.ok(match, error.message);
  assert.ok(Number(match[1]) >= 30 && Number(match[1]) <= 40, `expired ${match[1]} s ago`);
  const reply = inFrames(wire).find((m) => m[3] === 'phx_reply' && m[2] === `realtime:${room}`);
  assert.deepEqual(reply[4], { status: 'error', response: { reason: error.message } });
  const join = outFrames(wire).find((m) => m[3] === 'phx_join');
  assert.equal(join[4].access_token, expired, 'the token went in the join payload');
});

test('join refused: garbage token', async (t) => {
  const { supabase } = await clientWithToken(t, 'this.is-not.a-jwt');
  const { error } = await joinError(supabase.channel(newRoom()));
  assert.equal(error.message, 'MalformedJWT: The token provided is not a valid JWT');
});

test('join refused: token signed with another secret', async (t) => {
  const { supabase } = await clientWithToken(t, makeToken('not-the-server-secret', { role: 'authenticated' }));
  const { error } = await joinError(supabase.channel(newRoom()));
  assert.equal(error.message, 'JwtSignatureError: Failed to validate JWT signature');
});

test('join refused: token without role', async (t) => {
  const token = signJwt(server.secret, { exp: nowSeconds() + 600, sub: 'x' });
  const { supabase } = await clientWithToken(t, token);
  const { error } = await joinError(supabase.channel(newRoom()));
  assert.equal(error.message, 'InvalidJWTToken: Fields `role` and `exp` are required in JWT');
});

test('join refused: RealtimeClient.setAuth(expired) before subscribe', async (t) => {
  const { realtime } = realtimeClient(server, t);
  await realtime.setAuth(makeToken(server.secret, { expIn: -5 }));
  const { error } = await joinError(realtime.channel(newRoom()));
  assert.match(error.message, /^InvalidJWTToken: Token has expired \d+ seconds ago$/);
});

test('a refused join is retried by the client and refused again', async (t) => {
  const { supabase } = await clientWithToken(t, 'garbage');
  const channel = supabase.channel(newRoom());
  const { rec } = await joinError(channel);
  // realtime-js rejoins after 1 s; the server refuses again with the same reason.
  await waitForStatus(rec, 'CHANNEL_ERROR', 2, 5000);
  assert.equal(rec.statuses[1].error.message, 'MalformedJWT: The token provided is not a valid JWT');
  assert.equal(rec.count('SUBSCRIBED'), 0);
});

test('private channels are refused', async (t) => {
  const room = newRoom();
  const { supabase } = supabaseClient(server, t);
  const { error } = await joinError(supabase.channel(room, { config: { private: true } }));
  assert.equal(error.message, `Unauthorized: You do not have permissions to read from this Channel topic: ${room}`);
});

test('tokens printed by `headcount token` are accepted, and expired ones refused', async (t) => {
  const good = await cliToken(server.secret, { role: 'authenticated', sub: 'cli-user' });
  const m = await joined(t, newRoom(), { token: good });
  assert.equal(m.channel.state, 'joined');

  const bad = await cliToken(server.secret, { role: 'authenticated', expIn: -10 });
  const { supabase } = await clientWithToken(t, bad);
  const { error } = await joinError(supabase.channel(newRoom()));
  assert.match(error.message, /^InvalidJWTToken: Token has expired \d+ seconds ago$/);
});

test('HS384 and HS512 tokens are accepted; alg "none" is refused', async (t) => {
  for (const alg of ['HS384', 'HS512']) {
    const token = signJwt(server.secret, { role: 'authenticated', exp: nowSeconds() + 600 }, { alg });
    const m = await joined(t, newRoom(), { token });
    assert.equal(m.channel.state, 'joined', alg);
    assert.match(outFrames(m.wire).find((f) => f[3] === 'phx_join')[4].access_token, new RegExp(`^${token.split('.')[0]}`));
  }
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ role: 'authenticated', exp: nowSeconds() + 600 })}.`;
  const { supabase } = await clientWithToken(t, none);
  const { error } = await joinError(supabase.channel(newRoom()));
  assert.equal(
    error.message,
    'JwtSignerError: Failed to generate JWT signer, check your JWT secret or JWKS configuration',
  );
});

test('after a refused join, a valid token lets the automatic rejoin succeed on the same socket', async (t) => {
  const room = newRoom();
  const watcher = await joined(t, room, { key: 'watcher' });
  let session = makeToken(server.secret, { role: 'authenticated', expIn: -5 });
  const { supabase, realtime, wire } = await clientWithToken(t, () => session);
  const channel = supabase.channel(room, { config: { presence: { key: 'recovering' } } });
  const rec = observe(channel);
  const tracks = [];
  channel.subscribe((status, error) => {
    rec.statuses.push({ status, error });
    if (status === 'SUBSCRIBED') tracks.push(channel.track({ recovered: true }));
  });
  await waitForStatus(rec, 'CHANNEL_ERROR');
  assert.match(rec.statuses[0].error.message, /^InvalidJWTToken: Token has expired/);

  session = makeToken(server.secret, { role: 'authenticated', expIn: 600 });
  await realtime.setAuth();
  await waitForStatus(rec, 'SUBSCRIBED', 1, 8000);
  assert.equal(await tracks[0], 'ok');
  await waitFor(() => watcher.channel.presenceState().recovering?.[0]?.recovered === true, 5000, 'the recovered member');
  await waitFor(() => channel.presenceState().watcher, 5000, 'the recovered member sees the room');
  assert.equal(wire.connections.length, 1, 'same socket');
  const joins = outFrames(wire).filter((m) => m[3] === 'phx_join');
  assert.ok(joins.length >= 2);
  assert.notEqual(joins.at(-1)[0], joins[0][0], 'the rejoin has a new join_ref');
  const state = inFrames(wire).filter((m) => m[3] === 'presence_state').at(-1);
  assert.equal(state[0], joins.at(-1)[0], 'presence_state carries the new join_ref');
});
