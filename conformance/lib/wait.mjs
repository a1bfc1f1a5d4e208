// Bounded waiting. Nothing in this suite sleeps to "let things settle": it waits for the
// condition it needs, with a deadline, and fails with a description of what never happened.

/** The default deadline for something that should happen promptly on a local socket. */
export const DEFAULT_TIMEOUT_MS = 5000;

/**
 * Resolves with the first truthy value of `predicate()`, polled every few milliseconds, or
 * rejects after `timeoutMs`. `describe` (a string or a function) names what was awaited;
 * `detail` (a function) adds the state at the deadline to the error.
 */
export async function waitFor(predicate, timeoutMs = DEFAULT_TIMEOUT_MS, describe = 'condition', detail) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const value = await predicate();
      if (value) return value;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const what = typeof describe === 'function' ? describe() : describe;
  let message = `timed out after ${timeoutMs} ms waiting for ${what}`;
  if (lastError) message += `\nlast error: ${lastError.stack ?? lastError}`;
  if (detail) {
    try {
      message += `\nstate: ${detail()}`;
    } catch (e) {
      message += `\n(state unavailable: ${e})`;
    }
  }
  throw new Error(message);
}

/** Rejects when `promise` has not settled within `timeoutMs`. */
export async function withTimeout(promise, timeoutMs, describe = 'promise') {
  let timer;
  try {
    return await Promise.race([
      promise,
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${describe}`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The longest a negative check ("nothing else arrives") may wait. */
export const QUIET_MS = 300;

/**
 * For negative checks only: waits a short fixed time, then reports whether `predicate()` is
 * still falsy. Used after a positive event proved that the message in question would already
 * have been delivered.
 */
export async function staysFalse(predicate, ms = QUIET_MS) {
  if (ms > QUIET_MS) throw new Error(`a negative check may wait at most ${QUIET_MS} ms`);
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (predicate()) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return !predicate();
}
