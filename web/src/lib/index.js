// Svelte components for Supabase Realtime presence, as documented on the "Realtime Presence"
// seed page: <SupabaseApp> provides a client, <RealtimePresence> tracks this client on a channel
// and hands the presence state to its slot. Works against Supabase and against headcount.

import SupabaseAppComponent from './SupabaseApp.svelte';
import RealtimePresenceComponent from './RealtimePresence.svelte';
import { withSlotBridge } from './slot-bridge.js';

/** Provides a Supabase client (from `client`, or `url` + `key`) to the components inside it. */
export const SupabaseApp = withSlotBridge(SupabaseAppComponent);
/** Tracks this client on a channel and hands the channel's presence state to its slot. */
export const RealtimePresence = withSlotBridge(RealtimePresenceComponent);

export { presenceStateStore, userStatusStore } from './stores.js';
export { getSupabaseContext, setSupabaseContext } from './context.js';
export { presenceCount } from './presence-state.js';
export { PRESENCE_MAX_CALLS, PRESENCE_WINDOW_MS } from './call-budget.js';
