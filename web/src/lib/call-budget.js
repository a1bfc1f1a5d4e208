// Client side of Supabase Realtime's per-channel presence limit: the server allows 5 presence
// calls (track or untrack) per 30 s window on a channel, and closes the channel with "Client
// presence rate limit exceeded" on the 6th. The server's window is fixed and starts at its first
// call; keeping every *sliding* window of the same length (plus a margin for network delay) under
// the limit keeps every fixed window under it too.

/** The server's default limit: calls per window. */
export const PRESENCE_MAX_CALLS = 5;
/** The server's default window, in milliseconds. */
export const PRESENCE_WINDOW_MS = 30_000;
/** Added to the window so that a call delayed on the way cannot land in an earlier window. */
export const PRESENCE_WINDOW_MARGIN_MS = 2_000;

/** Remembers when the last calls were made and says how long to wait before the next one. */
export class CallBudget {
  /**
   * @param {number} maxCalls
   * @param {number} windowMs
   */
  constructor(maxCalls = PRESENCE_MAX_CALLS, windowMs = PRESENCE_WINDOW_MS + PRESENCE_WINDOW_MARGIN_MS) {
    this.maxCalls = maxCalls;
    this.windowMs = windowMs;
    /** @type {number[]} times of the calls still inside the window, oldest first */
    this.calls = [];
  }

  /**
   * Milliseconds to wait before a call made at `now` stays within the budget (0: call now).
   * @param {number} now
   */
  wait(now) {
    const recent = this.calls.filter((t) => now - t < this.windowMs);
    if (recent.length < this.maxCalls) return 0;
    // The call that frees a slot is the maxCalls-th most recent one.
    return recent[recent.length - this.maxCalls] + this.windowMs - now;
  }

  /** @param {number} now */
  record(now) {
    this.calls = this.calls.filter((t) => now - t < this.windowMs);
    this.calls.push(now);
  }

  /** Forgets every call: a new join starts a new window on the server. */
  reset() {
    this.calls = [];
  }
}
