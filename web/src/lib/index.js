// Svelte components for Supabase Realtime presence and broadcast, as documented on the "Realtime
// Presence" seed page: <SupabaseApp> provides a client, <RealtimePresence> tracks this client on a
// channel and hands the presence state to its content, <BroadcastChannel> sends and receives
// broadcasts. Works against Supabase and against headcount. The types are in index.d.ts.

import SupabaseAppComponent from './SupabaseApp.svelte';
import RealtimePresenceComponent from './RealtimePresence.svelte';
import BroadcastChannelComponent from './BroadcastChannel.svelte';
import { withSlotBridge } from './slot-bridge.js';

export const SupabaseApp = withSlotBridge(SupabaseAppComponent, { keys: ['client'] });
export const RealtimePresence = withSlotBridge(RealtimePresenceComponent, {
  keys: ['state', 'realtime', 'error', 'channel', 'updateStatus', 'status', 'pending'],
  events: ['join', 'leave'],
});
export const BroadcastChannel = withSlotBridge(BroadcastChannelComponent, {
  keys: ['payload', 'channel', 'send', 'error'],
  events: ['message'],
});

export { presenceStateStore, userStatusStore, broadcastStore } from './stores.js';
export { getSupabaseContext, setSupabaseContext } from './context.js';
export { presenceCount } from './presence-state.js';
export { PRESENCE_MAX_CALLS, PRESENCE_WINDOW_MS } from './call-budget.js';
