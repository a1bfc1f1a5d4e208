// A separate process that joins a room with supabase-js and tracks a presence, then stays
// until it is killed. Arguments: <server url> <anon key> <room> <presence key>.
// Prints "tracked" once the track was acknowledged.

import WebSocket from 'ws';
import { createClient } from '@supabase/supabase-js';

const [url, anonKey, room, key] = process.argv.slice(2);
const supabase = createClient(url, anonKey, {
  auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  realtime: { transport: WebSocket },
});
const channel = supabase.channel(room, { config: { presence: { key } } });
channel.subscribe(async (status) => {
  if (status === 'SUBSCRIBED') {
    const result = await channel.track({ user: key, pid: process.pid });
    process.stdout.write(`${result === 'ok' ? 'tracked' : `track failed: ${result}`}\n`);
  } else {
    process.stdout.write(`status ${status}\n`);
  }
});
