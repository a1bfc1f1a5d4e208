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
      statusWatchers.forEach((w) => w({ data: ownStatus, error: null, pending: false }));
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
        /** @type {StatusSnapshot} */ ({ data: share ? share.status : ownStatus, error: null, pending: false }),
        (set) => {
          statusWatchers.add(set);
          set({
            data: share ? share.status : ownStatus,
            error: share?.statusError ?? null,
            pending: share?.pending ?? false,
          });
          return () => statusWatchers.delete(set);
        },
      );
    },
  };
}

/**
 * A store of the status this client tracks on a channel, `{ data, error, pending }`, with
 * `updateStatus(status)` which merges `status` into it and re-tracks. Calls in quick succession
 * are coalesced so the channel stays within the server's presence rate limit (5 calls per 30 s);
 * the latest status always goes out. `data` is the chosen status at once; `pending` is true while
 * it waits for the rate limit.
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
    /** @type {StatusSnapshot} */ ({ data: share.status, error: share.statusError, pending: share.pending }),
    (set) => share.listen({ status: set }),
  );
  return { subscribe, updateStatus: (status) => share.updateStatus(status) };
}

/**
 * @typedef {{ payload: any, error: Error | null, channel: any }} BroadcastSnapshot
 */

/**
 * A store of the last broadcast received on a channel for one event, `{ payload, error, channel }`,
 * with `send(payload)` which broadcasts `payload` under that event to the others on the channel
 * and resolves to realtime-js's answer ('ok', 'error', 'timed out'; it never rejects).
 * The channel opens with the first subscriber and is left with the last; stores of the same
 * channel name on the same client (presence stores included) share one channel.
 *
 * @param {any} realtime a RealtimeClient (`supabase.realtime`)
 * @param {string} [channelName]
 * @param {string} [eventName] the broadcast event to receive and send ('*' receives every event)
 * @param {any} [channelOptions] RealtimeChannelOptions (the first store of a channel decides)
 * @returns {import('svelte/store').Readable<BroadcastSnapshot> & {
 *   send: (payload: any) => Promise<string>, readonly channel: any }}
 */
export function broadcastStore(realtime, channelName = 'any', eventName = 'message', channelOptions) {
  /** @type {import('./channel-share.js').ChannelShare | null} */
  let share = null;
  /** @type {BroadcastSnapshot} */
  let snapshot = { payload: null, error: null, channel: null };
  /** @type {((value: BroadcastSnapshot) => void) | null} */
  let setter = null;
  const publish = (/** @type {Partial<BroadcastSnapshot>} */ change) => {
    snapshot = { ...snapshot, ...change };
    setter?.(snapshot);
  };

  const { subscribe } = readable(snapshot, (set) => {
    if (!isBrowser) return undefined;
    setter = set;
    if (!realtime) {
      publish({ error: new Error('Realtime is not initialized') });
      return () => {
        setter = null;
      };
    }
    share = acquireShare(realtime, channelName, channelOptions);
    const current = share;
    const unlisten = current.listen({
      // The channel is handed out once joined: send() works from then on.
      presence: ({ error, channel, joined }) => publish({ error, channel: joined ? channel : null }),
      broadcast: (message) => {
        if (eventName === '*' || message?.event === eventName) publish({ payload: message?.payload });
      },
    });
    const { error, channel, joined } = current.presence;
    publish({ error, channel: joined ? channel : null });
    return () => {
      unlisten();
      setter = null;
      share = null;
      current.release();
    };
  });

  /** @param {any} payload */
  // Never rejects: a failure is the store's `error`, and the answer says what happened.
  const send = (payload) => {
    if (!share) {
      publish({ error: new Error(`Channel ${channelName} is not open: the message was not sent`) });
      return Promise.resolve('error');
    }
    const event = eventName === '*' ? 'message' : eventName;
    return share.send(event, payload).then(
      (result) => {
        if (result !== 'ok') publish({ error: new Error(`Could not send on channel ${channelName}: ${result}`) });
        return result;
      },
      (e) => {
        publish({ error: e instanceof Error ? e : new Error(String(e)) });
        return 'error';
      },
    );
  };

  return {
    subscribe,
    send,
    get channel() {
      return share?.channel ?? null;
    },
  };
}
