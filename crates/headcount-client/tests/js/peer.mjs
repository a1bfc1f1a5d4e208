// A supabase-js peer for the SDK's integration tests.
//
//   node peer.mjs URL APIKEY CHANNEL PRESENCE_KEY STATUS_JSON
//
// It joins CHANNEL with presence key PRESENCE_KEY, tracks STATUS_JSON on every SUBSCRIBED (as
// the RealtimePresence component does), and prints one JSON object per line on stdout:
//   {"type":"status","status":"SUBSCRIBED"}
//   {"type":"sync","state":{KEY:[{presence_ref,...status}]}}
//   {"type":"broadcast","event":E,"payload":P}
// It reads commands from stdin, one JSON object per line:
//   {"cmd":"track","status":{...}}   {"cmd":"send","event":E,"payload":P}   {"cmd":"leave"}
// and exits when stdin closes.
//
// Modules come from the conformance suite's node_modules (`npm ci` in conformance/), found
// from HEADCOUNT_REPO or from this file's place in the repository.
import { createRequire } from 'node:module';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = process.env.HEADCOUNT_REPO ?? path.resolve(here, '../../../..');
const require = createRequire(path.join(repo, 'conformance', 'package.json'));

let createClient;
let WebSocket;
try {
  ({ createClient } = require('@supabase/supabase-js'));
  WebSocket = require('ws');
} catch (e) {
  console.error(
    `peer.mjs: cannot load @supabase/supabase-js and ws from ${path.join(repo, 'conformance', 'node_modules')}; ` +
      `run "npm ci" in conformance/ first (${e.message})`,
  );
  process.exit(3);
}

const [url, apikey, channelName, key, statusJson] = process.argv.slice(2);
let status = JSON.parse(statusJson ?? '{}');
const print = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

const supabase = createClient(url, apikey, { realtime: { transport: WebSocket } });
const channel = supabase.channel(channelName, { config: { presence: { key } } });
channel.on('presence', { event: 'sync' }, () => print({ type: 'sync', state: channel.presenceState() }));
channel.on('broadcast', { event: '*' }, (msg) => print({ type: 'broadcast', event: msg.event, payload: msg.payload }));
channel.subscribe((s, err) => {
  print({ type: 'status', status: s, error: err?.message ?? null });
  if (s === 'SUBSCRIBED') channel.track(status);
});

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', async (line) => {
  const cmd = JSON.parse(line);
  if (cmd.cmd === 'track') {
    status = cmd.status;
    print({ type: 'tracked', result: await channel.track(status) });
  } else if (cmd.cmd === 'send') {
    print({ type: 'sent', result: await channel.send({ type: 'broadcast', event: cmd.event, payload: cmd.payload }) });
  } else if (cmd.cmd === 'leave') {
    print({ type: 'left', result: await channel.unsubscribe() });
  }
});
lines.on('close', async () => {
  await supabase.removeAllChannels();
  process.exit(0);
});
