// Per-file setup: one headcount server for the file's tests, and a clean exit.

import { before, after } from 'node:test';
import { HeadcountServer } from './server.mjs';

/**
 * The client libraries arm timers that outlive their sockets (realtime-js keeps a 10 s timeout
 * on every push, even a broadcast without ack that never gets a reply). Once a file's tests are
 * done, nothing needs them: they are unref'd then, so the test process exits at once instead of
 * waiting for them. Nothing is changed while tests run.
 */
const timers = [];
const realSetTimeout = globalThis.setTimeout;
globalThis.setTimeout = function setTimeout(...args) {
  const handle = realSetTimeout.apply(this, args);
  if (timers.length > 50_000) timers.splice(0, timers.length - 10_000);
  timers.push(handle);
  return handle;
};

function releaseTimers() {
  for (const handle of timers.splice(0)) handle?.unref?.();
}

/**
 * Registers a server started before the file's tests and killed after them. The returned
 * object is the {@link HeadcountServer}; its port and anon key are set once `before` ran.
 */
export function useServer(options) {
  const server = new HeadcountServer(options);
  before(() => server.start());
  after(async () => {
    await server.kill();
    releaseTimers();
  });
  return server;
}

/** For files that start their own servers: releases the leftover timers at the end. */
export function releaseTimersAfterFile() {
  after(() => releaseTimers());
}
