// The two stores of the seed page, usable without the component:
//
//   const presence = presenceStateStore(supabase.realtime, 'room', undefined, { name: 'Ada' });
//   const status = userStatusStore(presence);
//   $presence.data   // presence state (with .count) or null until the first sync
//   $presence.error  // Error or null
//   status.updateStatus({ status: 'away' });
//
// A presence store opens its channel when it gets its first subscriber and leaves it when it
// loses its last one. Stores of the same channel name on the same client share one channel.

import { readable } from 'svelte/store';
import { acquireShare, shareOfChannel } from './channel-share.js';

const isBrowser = typeof window !== 'undefined';

/**
 * @typedef {import('./channel-share.js').PresenceSnapshot} PresenceSnapshot
 * @typedef {import('./channel-share.js').StatusSnapshot} StatusSnapshot
 * @typedef {import('svelte/store').Readable<PresenceSnapshot> & {
 *   readonly channel: any,
 *   updateStatus: (status: Record<string, any>) => void,
 *   on: (event: 'join' | 'leave', handler: (event: any) => void) => () => void,
 *   statusStore: () => import('svelte/store').Readable<StatusSnapshot>,
 * }} PresenceStore
 */

/**
 * A store of a channel's presence: `{ data, error, channel }`. `data` is null until the first
 * sync after each (re)join, then the presence state keyed by presence key, with a non-enumerable
 * `count` of the users present. While subscribed, this client is tracked on the channel with
 * `userStatus` (an empty object when undefined), re-tracked after every rejoin.
 *
 * @param {any} realtime a RealtimeClient (`supabase.realtime`)
 * @param {string} [channelName]
 * @param {any} [channelOptions] RealtimeChannelOptions (the first store of a channel decides)
 * @param {Record<string, any>} [userStatus]
 * @returns {PresenceStore}
 */
export function presenceStateStore(realtime, channelName = 'any', channelOptions, userStatus) {
  /** This store's contribution to the tracked status, kept for when the channel (re)opens. */
  let ownStatus = { ...(userStatus ?? {}) };
  /** @type {import('./channel-share.js').ChannelShare | null} */
  let share = null;
  /** @type {Set<(event: any) => void>} */
  const joinHandlers = new Set();
  /** @type {Set<(event: any) => void>} */
  const leaveHandlers = new Set();
  /** @type {Set<(snapshot: StatusSnapshot) => void>} */
  const statusWatchers = new Set();

  const initial = { data: null, error: null, channel: null };
  const { subscribe } = readable(/** @type {PresenceSnapshot} */ (initial), (set) => {
    if (!isBrowser) return undefined;
    if (!realtime) {
      set({ data: null, error: new Error('Realtime is not initialized'), channel: null });
      return undefined;
    }
    share = acquireShare(realtime, channelName, channelOptions);
    const current = share;
    const unlisten = current.listen({
      presence: set,
      join: (event) => joinHandlers.forEach((h) => h(event)),
      leave: (event) => leaveHandlers.forEach((h) => h(event)),
      status: (snapshot) => statusWatchers.forEach((w) => w(snapshot)),
    });
    set(current.presence);
    current.updateStatus(ownStatus);
    return () => {
      unlisten();
      share = null;
      current.release();
    };
  });

  /** @param {Record<string, any>} status */
  const updateStatus = (status) => {
    if (!status || typeof status !== 'object') return;
    ownStatus = { ...ownStatus, ...status };
    if (share) {
      share.updateStatus(status);
    } else {
      statusWatchers.forEach((w) => w({ data: ownStatus, error: null }));
    }
  };

  return {
    subscribe,
    get channel() {
      return share?.channel ?? null;
    },
    updateStatus,
    on(event, handler) {
      const handlers = event === 'join' ? joinHandlers : event === 'leave' ? leaveHandlers : null;
      if (!handlers) throw new Error(`Unknown presence event "${event}": use "join" or "leave"`);
      handlers.add(handler);
      return () => handlers.delete(handler);
    },
    statusStore() {
      return readable(
        /** @type {StatusSnapshot} */ ({ data: share ? share.status : ownStatus, error: null }),
        (set) => {
          statusWatchers.add(set);
          set({ data: share ? share.status : ownStatus, error: share?.statusError ?? null });
          return () => statusWatchers.delete(set);
        },
      );
    },
  };
}

/**
 * A store of the status this client tracks on a channel, `{ data, error }`, with
 * `updateStatus(status)` which merges `status` into it and re-tracks. Calls in quick succession
 * are coalesced so the channel stays within the server's presence rate limit (5 calls per 30 s);
 * the latest status always goes out.
 *
 * @param {PresenceStore | any} target a store from presenceStateStore, or a channel it opened
 * @param {Record<string, any>} [userStatus] merged into the status
 * @returns {import('svelte/store').Readable<StatusSnapshot> & {
 *   updateStatus: (status: Record<string, any>) => void }}
 */
export function userStatusStore(target, userStatus) {
  if (target && typeof target.statusStore === 'function') {
    if (userStatus) target.updateStatus(userStatus);
    return { subscribe: target.statusStore().subscribe, updateStatus: target.updateStatus };
  }
  const share = shareOfChannel(target);
  if (!share) {
    throw new Error(
      'userStatusStore needs a store from presenceStateStore (or the channel such a store opened)',
    );
  }
  if (userStatus) share.updateStatus(userStatus);
  const { subscribe } = readable(
    /** @type {StatusSnapshot} */ ({ data: share.status, error: share.statusError }),
    (set) => share.listen({ status: set }),
  );
  return { subscribe, updateStatus: (status) => share.updateStatus(status) };
}
