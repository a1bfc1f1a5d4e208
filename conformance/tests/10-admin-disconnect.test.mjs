// The admin API's "disconnect a user" against sockets as supabase-js opens them: connected
// with the anon key, the signed-in user's token sent only in the join's access_token.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServer } from '../lib/harness.mjs';
import { supabaseClient, observe, subscribe } from '../lib/clients.mjs';
import { makeToken, claimsOf } from '../lib/tokens.mjs';
import { waitFor, staysFalse } from '../lib/wait.mjs';

const server = useServer();

/** A supabase-js client signed in as `sub` (through the accessToken option), joined to `room`. */
async function signedIn(t, sub, room) {
  const token = makeToken(server.secret, { role: 'authenticated', sub, expIn: 600 });
  const client = supabaseClient(server, t, { accessToken: async () => token });
  await waitFor(() => client.realtime.accessTokenValue === token, 5000, 'supabase-js to pass the token to realtime-js');
  const channel = client.supabase.channel(room);
  const rec = observe(channel);
  await subscribe(channel, rec);
  return { ...client, channel, rec, token };
}

async function disconnect(sub) {
  const admin = makeToken(server.secret, { role: 'service_role', expIn: 600 });
  const resp = await fetch(`${server.httpUrl}/admin/api/disconnect`, {
    method: 'POST',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ sub }),
  });
  assert.equal(resp.status, 200, await resp.clone().text());
  return resp.json();
}

test("disconnecting a user closes their supabase-js socket, counts it, and leaves the others'", async (t) => {
  const room = `admin-disconnect-${process.pid}`;
  const alice = await signedIn(t, 'alice', room);
  const bob = await signedIn(t, 'bob', room);
  // What makes these sockets hard to find: the apikey on the socket is the anon key, with no
  // sub; alice's token only went out in the join.
  assert.equal(claimsOf(server.anonKey).sub, undefined);
  const join = alice.wire.sent().find((f) => !f.binary && f.data.includes('"phx_join"'));
  assert.ok(join && join.data.includes(alice.token), 'the join carries the user token');

  assert.deepEqual(await disconnect('alice'), { disconnected: 1 });
  await waitFor(() => alice.wire.connections[0].closedAt !== null, 5000, "alice's socket to close");
  assert.equal(alice.wire.connections[0].code, 1008);
  assert.equal(alice.wire.connections[0].reason, 'disconnected by an administrator');
  // bob's socket stays open.
  assert.ok(await staysFalse(() => bob.wire.connections[0].closedAt !== null));
  assert.equal(bob.wire.connections.length, 1);
});
