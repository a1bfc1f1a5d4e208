// A channel's presence as this client shows it, kept from the server's own messages
// (presence_state, then presence_diff) with Phoenix Presence's rules, so that the count does not
// depend on the presence bookkeeping of the realtime-js release the app happens to have.

/**
 * A presence as realtime-js hands it out: the server's meta with `phx_ref` renamed
 * `presence_ref` and `phx_ref_prev` dropped. Some realtime-js releases rename the fields of the
 * message in place before other bindings see it, so either name is accepted.
 * @param {Record<string, any>} meta
 * @returns {Record<string, any> & { presence_ref: string }}
 */
export function presenceFromServer(meta) {
  const { phx_ref, phx_ref_prev, presence_ref, ...fields } = meta ?? {};
  return { presence_ref: phx_ref ?? presence_ref, ...fields };
}

/**
 * Sets an entry of a view; defineProperty, so that a key such as "__proto__" stays an entry.
 * @param {Record<string, any[]>} view
 * @param {string} key
 * @param {any[]} presences
 */
export function setEntry(view, key, presences) {
  Object.defineProperty(view, key, { value: presences, enumerable: true, writable: true, configurable: true });
}

/**
 * @typedef {{ event: 'join', key: string, currentPresences: any[], newPresences: any[] }} JoinEvent
 * @typedef {{ event: 'leave', key: string, currentPresences: any[], leftPresences: any[] }} LeaveEvent
 */

/**
 * Applies one presence_diff: joins first (a key's new presences replace those with the same
 * ref), then leaves (by ref; a key with no presence left is removed). A status update arrives as
 * a join of the new presence and a leave of the old one. Returns a new view; `view` is unchanged.
 * @param {Record<string, any[]>} view
 * @param {{ joins?: Record<string, { metas: any[] }>, leaves?: Record<string, { metas: any[] }> }} diff
 * @returns {{ view: Record<string, any[]>, events: (JoinEvent | LeaveEvent)[] }}
 */
export function applyPresenceDiff(view, diff) {
  const next = { ...view };
  /** @type {(JoinEvent | LeaveEvent)[]} */
  const events = [];
  for (const [key, entry] of Object.entries(diff?.joins ?? {})) {
    const newPresences = (entry?.metas ?? []).map(presenceFromServer);
    if (newPresences.length === 0) continue;
    const currentPresences = Object.hasOwn(next, key) ? next[key] : [];
    const refs = new Set(newPresences.map((p) => p.presence_ref));
    setEntry(next, key, [...currentPresences.filter((p) => !refs.has(p.presence_ref)), ...newPresences]);
    events.push({ event: 'join', key, currentPresences, newPresences });
  }
  for (const [key, entry] of Object.entries(diff?.leaves ?? {})) {
    if (!Object.hasOwn(next, key)) continue;
    const current = next[key];
    const leftPresences = (entry?.metas ?? []).map(presenceFromServer);
    const refs = new Set(leftPresences.map((p) => p.presence_ref));
    const remaining = current.filter((p) => !refs.has(p.presence_ref));
    if (remaining.length > 0) {
      setEntry(next, key, remaining);
    } else {
      delete next[key];
    }
    events.push({ event: 'leave', key, currentPresences: remaining, leftPresences });
  }
  return { view: next, events };
}
