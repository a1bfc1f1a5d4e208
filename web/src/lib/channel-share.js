// One realtime channel, shared by every store (and so every RealtimePresence) that asks for the
// same channel name on the same client.
//
// realtime-js hands out one channel object per topic and refuses presence callbacks once
// subscribe() has been called, so the bindings are made here, once, before the one subscribe();
// the stores only add listeners to this object. The share also owns what the server knows about
// this client on the channel: the status it tracks. It re-tracks the latest status after every
// (re)join and spaces the calls out so they stay within the server's presence rate limit.
//
// Lifecycle: acquireShare() opens the channel (refcounted); the last release() leaves and removes
// it. A channel closed by the server (which realtime-js never rejoins) is opened again after a
// backoff for as long as someone holds the share.

import { CallBudget } from './call-budget.js';
import { makePresenceState } from './presence-state.js';
import { applyPresenceDiff, presenceFromServer, setEntry } from './presence-view.js';

/** Backoff before opening again a channel that the server closed, by attempt. */
const REOPEN_DELAYS_MS = [1_000, 2_000, 5_000, 10_000];

/** @type {WeakMap<object, Map<string, ChannelShare>>} realtime client -> channel name -> share */
const shares = new WeakMap();
/** @type {WeakMap<object, Map<string, Promise<unknown>>>} channels still leaving, by client and name */
const leaving = new WeakMap();
/** @type {WeakMap<object, ChannelShare>} channel object -> the share that opened it */
const byChannel = new WeakMap();

/**
 * The share for `name` on `realtime`, opened if nobody holds it yet. Call `release()` once done.
 * @param {any} realtime a RealtimeClient (`supabase.realtime`)
 * @param {string} name
 * @param {any} [options] RealtimeChannelOptions, used by whoever opens the channel first
 * @returns {ChannelShare}
 */
export function acquireShare(realtime, name, options) {
  let byName = shares.get(realtime);
  if (!byName) {
    byName = new Map();
    shares.set(realtime, byName);
  }
  let share = byName.get(name);
  if (!share) {
    share = new ChannelShare(realtime, name, options);
    byName.set(name, share);
    share.open();
  }
  share.holders += 1;
  return share;
}

/**
 * The share that opened this channel object, if any.
 * @param {any} channel
 * @returns {ChannelShare | undefined}
 */
export function shareOfChannel(channel) {
  return channel ? byChannel.get(channel) : undefined;
}

/** Deterministic JSON (object keys sorted), to compare statuses by value. */
function canonicalJson(value) {
  return JSON.stringify(value, (_key, v) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
      : v,
  );
}

/**
 * @typedef {{ data: Record<string, any[]> | null, error: Error | null, channel: any, joined?: boolean }} PresenceSnapshot
 * @typedef {{ data: Record<string, any>, error: Error | null, pending: boolean }} StatusSnapshot
 * @typedef {{
 *   presence?: (snapshot: PresenceSnapshot) => void,
 *   status?: (snapshot: StatusSnapshot) => void,
 *   join?: (event: any) => void,
 *   leave?: (event: any) => void,
 *   broadcast?: (message: any) => void,
 * }} ShareListener
 */

export class ChannelShare {
  /**
   * @param {any} realtime
   * @param {string} name
   * @param {any} options
   */
  constructor(realtime, name, options) {
    this.realtime = realtime;
    this.name = name;
    // realtime-js replaces `options.config` with a merged copy: hand it a copy of our own.
    this.options = options ? { ...options, config: { ...options.config } } : undefined;
    /** How many stores hold this share. */
    this.holders = 0;
    /** Set by the last release(): nothing may reopen the channel or send on it. */
    this.released = false;
    /** @type {Set<ShareListener>} */
    this.listeners = new Set();
    /** The current channel object (a new one after a server close), or null. */
    this.channel = null;
    /** @type {PresenceSnapshot} */
    this.presence = { data: null, error: null, channel: null, joined: false };
    /** Whether the current channel is joined (SUBSCRIBED and not errored since). */
    this.joined = false;
    /** The status this client tracks on the channel: every holder's contributions merged. */
    this.status = {};
    /** Whether a presence store holds this share: a broadcast-only channel never tracks. */
    this.tracking = false;
    /**
     * This share's own view of the channel's presence, built from the server's presence_state
     * and presence_diff messages (key -> presences), or null before the first presence_state of
     * the current join. Some realtime-js releases (2.109, the last for Node 20) corrupt their own
     * state on a status update and then keep a key that left, so the count is never read from
     * channel.presenceState().
     * @type {Record<string, any[]> | null}
     */
    this.view = null;
    /** @type {any[]} diffs received before the presence_state of the current join */
    this.earlyDiffs = [];
    /** @type {Error | null} the last failed track, cleared by the next success */
    this.statusError = null;
    /** canonicalJson of the status last sent in the current join (undefined: none yet). */
    this.sentStatus = undefined;
    this.budget = new CallBudget();
    /** @type {ReturnType<typeof setTimeout> | null} a deferred track, waiting for budget */
    this.trackTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.reopenTimer = null;
    this.reopenAttempts = 0;
    /** The message of the last `system` error the server sent (it precedes a close). */
    this.lastSystemError = null;
  }

  /** Opens the channel, after any channel of the same name has finished leaving. */
  open() {
    const pending = leaving.get(this.realtime)?.get(this.name);
    if (pending) {
      pending.then(() => this.openNow());
    } else {
      this.openNow();
    }
  }

  openNow() {
    if (this.released) return;
    let channel;
    try {
      channel = this.realtime.channel(this.name, this.options);
      if (!('name' in channel)) {
        // The seed's example reads `channel.name`, which RealtimeChannel does not have.
        Object.defineProperty(channel, 'name', { value: this.name, configurable: true });
      }
      // Every presence callback goes on before subscribe(): realtime-js throws afterwards. The
      // `presence` binding makes realtime-js ask the server for presence on the join; the view
      // itself comes from the raw messages, which every realtime-js release hands to bindings
      // of their event name.
      channel.on('presence', { event: 'sync' }, () => {});
      channel.on('presence_state', {}, (state) => this.onServerState(channel, state));
      channel.on('presence_diff', {}, (diff) => this.onServerDiff(channel, diff));
      channel.on('broadcast', { event: '*' }, (message) => this.emit('broadcast', message));
      channel.on('system', {}, (message) => {
        if (message?.status === 'error' && message.message) this.lastSystemError = message.message;
      });
    } catch (e) {
      const reason = e instanceof Error ? e.message : String(e);
      this.setPresence({
        data: null,
        error: new Error(`Cannot listen to channel ${this.name}: ${reason}`),
        channel: channel ?? null,
      });
      return;
    }
    this.channel = channel;
    this.lastSystemError = null;
    byChannel.set(channel, this);
    this.setPresence({ ...this.presence, channel });
    channel.subscribe((status, err) => this.onStatus(channel, status, err));
  }

  /**
   * @param {any} channel
   * @param {string} status
   * @param {Error | undefined} err
   */
  onStatus(channel, status, err) {
    if (channel !== this.channel || this.released) return;
    if (status === 'SUBSCRIBED') {
      this.joined = true;
      this.reopenAttempts = 0;
      // A new join is a new presence on the server (and a new rate-limit window): track again.
      // Its presence_state replaces the view; diffs before it wait for it.
      this.view = null;
      this.earlyDiffs = [];
      this.sentStatus = undefined;
      this.budget.reset();
      this.cancelTrack();
      // Published on every join: `joined` changed (BroadcastChannel shows its channel from now).
      this.setPresence(this.presence.error ? { data: null, error: null, channel } : { ...this.presence, channel });
      this.flushStatus();
      return;
    }
    this.joined = false;
    this.cancelTrack();
    if (status === 'CLOSED') {
      // realtime-js never rejoins a channel the server closed: open a new one.
      this.channel = null;
      const why = this.lastSystemError ? `: ${this.lastSystemError}` : '';
      this.setPresence({
        data: null,
        error: new Error(`Channel ${this.name} was closed by the server${why}`),
        channel,
      });
      const delay = REOPEN_DELAYS_MS[Math.min(this.reopenAttempts, REOPEN_DELAYS_MS.length - 1)];
      this.reopenAttempts += 1;
      this.reopenTimer = setTimeout(() => {
        this.reopenTimer = null;
        this.openNow();
      }, delay);
      return;
    }
    // CHANNEL_ERROR or TIMED_OUT: realtime-js rejoins by itself.
    const why = err?.message ? ` (${err.message})` : '';
    this.setPresence({
      data: null,
      error: new Error(`Channel ${this.name} error: ${status}${why}`),
      channel,
    });
  }

  /**
   * The server's full presence state of the channel, sent after each join.
   * @param {any} channel
   * @param {Record<string, { metas: any[] }>} state
   */
  onServerState(channel, state) {
    if (channel !== this.channel || this.released) return;
    const previous = this.view ?? {};
    /** @type {Record<string, any[]>} */
    const next = {};
    for (const key of Object.keys(state ?? {})) {
      const presences = (state[key]?.metas ?? []).map(presenceFromServer);
      if (presences.length > 0) setEntry(next, key, presences);
    }
    // Joins and leaves against what this client showed before (nothing, on the first join).
    /** @type {Record<string, any[]>} */
    const joins = {};
    /** @type {Record<string, any[]>} */
    const leaves = {};
    for (const [key, presences] of Object.entries(next)) {
      const known = new Set((Object.hasOwn(previous, key) ? previous[key] : []).map((p) => p.presence_ref));
      const fresh = presences.filter((p) => !known.has(p.presence_ref));
      if (fresh.length > 0) setEntry(joins, key, fresh);
    }
    for (const [key, presences] of Object.entries(previous)) {
      const kept = new Set((Object.hasOwn(next, key) ? next[key] : []).map((p) => p.presence_ref));
      const gone = presences.filter((p) => !kept.has(p.presence_ref));
      if (gone.length > 0) setEntry(leaves, key, gone);
    }
    for (const [key, newPresences] of Object.entries(joins)) {
      this.emit('join', { event: 'join', key, currentPresences: Object.hasOwn(previous, key) ? previous[key] : [], newPresences });
    }
    for (const [key, leftPresences] of Object.entries(leaves)) {
      this.emit('leave', { event: 'leave', key, currentPresences: Object.hasOwn(next, key) ? next[key] : [], leftPresences });
    }
    this.view = next;
    const early = this.earlyDiffs;
    this.earlyDiffs = [];
    for (const diff of early) this.applyDiff(diff);
    this.publishView(channel);
  }

  /**
   * @param {any} channel
   * @param {{ joins?: Record<string, { metas: any[] }>, leaves?: Record<string, { metas: any[] }> }} diff
   */
  onServerDiff(channel, diff) {
    if (channel !== this.channel || this.released) return;
    if (this.view === null) {
      this.earlyDiffs.push(diff);
      return;
    }
    this.applyDiff(diff);
    this.publishView(channel);
  }

  /** @param {any} diff */
  applyDiff(diff) {
    const { view, events } = applyPresenceDiff(this.view ?? {}, diff);
    this.view = view;
    for (const event of events) this.emit(event.event, event);
  }

  /** @param {any} channel */
  publishView(channel) {
    this.setPresence({ data: makePresenceState(this.view ?? {}), error: null, channel });
  }

  /**
   * Merges `partial` into the tracked status and sends it when the budget allows.
   * @param {Record<string, any>} partial
   */
  updateStatus(partial) {
    if (!partial || typeof partial !== 'object') return;
    this.tracking = true;
    this.status = { ...this.status, ...partial };
    this.emitStatus();
    this.flushStatus();
  }

  /** Sends the latest status if it differs from what the server has, now or once budget allows. */
  flushStatus() {
    if (!this.joined || this.released || this.trackTimer || !this.tracking) return;
    const json = canonicalJson(this.status);
    // The server counts identical tracks against the limit too: never send one.
    if (json === this.sentStatus) return;
    const wait = this.budget.wait(Date.now());
    if (wait > 0) {
      // Later updates only change this.status: one call, with the latest status, goes out.
      this.trackTimer = setTimeout(() => {
        this.trackTimer = null;
        this.flushStatus();
        if (!this.trackTimer) this.emitStatus();
      }, wait);
      this.emitStatus();
      return;
    }
    const channel = this.channel;
    this.budget.record(Date.now());
    this.sentStatus = json;
    channel.track(this.status).then(
      (result) => this.onTracked(channel, json, result === 'ok' ? null : result),
      (e) => this.onTracked(channel, json, e instanceof Error ? e.message : String(e)),
    );
  }

  /**
   * @param {any} channel
   * @param {string} json
   * @param {string | null} failure
   */
  onTracked(channel, json, failure) {
    if (channel !== this.channel || this.released) return;
    if (failure === null) {
      if (this.statusError) {
        this.statusError = null;
        this.emitStatus();
      }
      return;
    }
    // The server may not have it: send it again with the next update or the next join.
    if (this.sentStatus === json) this.sentStatus = undefined;
    this.statusError = new Error(`Could not update the status on channel ${this.name}: ${failure}`);
    this.emitStatus();
  }

  cancelTrack() {
    if (this.trackTimer) {
      clearTimeout(this.trackTimer);
      this.trackTimer = null;
      this.emitStatus();
    }
  }

  /** Whether the latest status waits for the presence rate limit before it can be sent. */
  get pending() {
    return this.trackTimer !== null;
  }

  /**
   * Sends a broadcast on the current channel once it is joined.
   * @param {string} event
   * @param {any} payload
   * @returns {Promise<string>} realtime-js's answer: 'ok', 'timed out' or 'error'
   */
  send(event, payload) {
    if (!this.joined || !this.channel || this.released) {
      return Promise.reject(new Error(`Channel ${this.name} is not joined: the message was not sent`));
    }
    return this.channel.send({ type: 'broadcast', event, payload });
  }

  /** @param {PresenceSnapshot} snapshot */
  setPresence(snapshot) {
    this.presence = { ...snapshot, joined: this.joined };
    for (const l of [...this.listeners]) l.presence?.(this.presence);
  }

  emitStatus() {
    const snapshot = { data: this.status, error: this.statusError, pending: this.pending };
    for (const l of [...this.listeners]) l.status?.(snapshot);
  }

  /**
   * @param {'join' | 'leave' | 'broadcast'} kind
   * @param {any} event
   */
  emit(kind, event) {
    for (const l of [...this.listeners]) l[kind]?.(event);
  }

  /**
   * @param {ShareListener} listener
   * @returns {() => void} removes the listener
   */
  listen(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Drops one hold; the last one leaves the channel and removes it from the client. */
  release() {
    this.holders -= 1;
    if (this.holders > 0) return;
    this.released = true;
    this.joined = false;
    this.cancelTrack();
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.listeners.clear();
    shares.get(this.realtime)?.delete(this.name);
    const channel = this.channel;
    this.channel = null;
    if (!channel) return;
    // Leaving ends the presence on the server (the others get a leave); removing the channel
    // lets the client disconnect once it has no channel left. Until the leave is answered
    // realtime-js still hands out this channel object, so a new share of the same name waits.
    let byName = leaving.get(this.realtime);
    if (!byName) {
      byName = new Map();
      leaving.set(this.realtime, byName);
    }
    const done = Promise.resolve()
      .then(() => this.realtime.removeChannel(channel))
      .catch(() => {})
      .finally(() => {
        if (byName.get(this.name) === done) byName.delete(this.name);
      });
    byName.set(this.name, done);
  }
}
