// The `state` that RealtimePresence hands to its slot: realtime-js's presence state (one entry per
// presence key, each a list of presences) plus a `count` of distinct keys. The count lives on the
// prototype, not on the object: it never shows up in Object.keys/entries, for...in or JSON, and a
// presence key literally named "count" keeps its entry (it then shadows the number; presenceCount
// always gives the number).

const stateProto = Object.create(Object.prototype, {
  count: {
    enumerable: false,
    get() {
      return Object.keys(this).length;
    },
  },
});

/**
 * Builds the slot's `state` from `channel.presenceState()`.
 * @param {Record<string, any[]>} raw
 * @returns {Record<string, any[]> & { readonly count: number }}
 */
export function makePresenceState(raw) {
  const state = Object.create(stateProto);
  for (const key of Object.keys(raw ?? {})) {
    // defineProperty, not assignment: a key such as "__proto__" stays a plain entry.
    Object.defineProperty(state, key, {
      value: raw[key],
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return state;
}

/**
 * The number of users present (distinct presence keys) in a presence state, whatever its keys.
 * @param {Record<string, any[]> | null | undefined} state
 * @returns {number}
 */
export function presenceCount(state) {
  return state ? Object.keys(state).length : 0;
}
