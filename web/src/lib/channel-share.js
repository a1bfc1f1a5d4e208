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
 * @typedef {{ data: Record<string, any[]> | null, error: Error | null, channel: any }} PresenceSnapshot
 * @typedef {{ data: Record<string, any>, error: Error | null }} StatusSnapshot
 * @typedef {{
 *   presence?: (snapshot: PresenceSnapshot) => void,
 *   status?: (snapshot: StatusSnapshot) => void,
 *   join?: (event: any) => void,
 *   leave?: (event: any) => void,
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
    this.presence = { data: null, error: null, channel: null };
    /** Whether the current channel is joined (SUBSCRIBED and not errored since). */
    this.joined = false;
    /** The status this client tracks on the channel: every holder's contributions merged. */
    this.status = {};
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
      // Every presence callback goes on before subscribe(): realtime-js throws afterwards.
      channel.on('presence', { event: 'sync' }, () => this.onSync(channel));
      channel.on('presence', { event: 'join' }, (event) => this.emit('join', event));
      channel.on('presence', { event: 'leave' }, (event) => this.emit('leave', event));
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
      this.sentStatus = undefined;
      this.budget.reset();
      this.cancelTrack();
      if (this.presence.error) this.setPresence({ data: null, error: null, channel });
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

  /** @param {any} channel */
  onSync(channel) {
    if (channel !== this.channel || this.released) return;
    this.setPresence({ data: makePresenceState(channel.presenceState()), error: null, channel });
  }

  /**
   * Merges `partial` into the tracked status and sends it when the budget allows.
   * @param {Record<string, any>} partial
   */
  updateStatus(partial) {
    if (!partial || typeof partial !== 'object') return;
    this.status = { ...this.status, ...partial };
    this.emitStatus();
    this.flushStatus();
  }

  /** Sends the latest status if it differs from what the server has, now or once budget allows. */
  flushStatus() {
    if (!this.joined || this.released || this.trackTimer) return;
    const json = canonicalJson(this.status);
    // The server counts identical tracks against the limit too: never send one.
    if (json === this.sentStatus) return;
    const wait = this.budget.wait(Date.now());
    if (wait > 0) {
      // Later updates only change this.status: one call, with the latest status, goes out.
      this.trackTimer = setTimeout(() => {
        this.trackTimer = null;
        this.flushStatus();
      }, wait);
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
    }
  }

  /** @param {PresenceSnapshot} snapshot */
  setPresence(snapshot) {
    this.presence = snapshot;
    for (const l of [...this.listeners]) l.presence?.(snapshot);
  }

  emitStatus() {
    const snapshot = { data: this.status, error: this.statusError };
    for (const l of [...this.listeners]) l.status?.(snapshot);
  }

  /**
   * @param {'join' | 'leave'} kind
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
