// Runs the real headcount binary on a free 127.0.0.1 port.

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { withTimeout } from './wait.mjs';

/** The binary under test: `HEADCOUNT_BIN`, else the debug build of this repository. */
export const HEADCOUNT_BIN =
  process.env.HEADCOUNT_BIN || fileURLToPath(new URL('../../target/debug/headcount', import.meta.url));

const BANNER = 'headcount 0.1.0 is running.';
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 8_000;

/** Every process this module started and that has not exited yet. */
const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/**
 * If this process dies without running its exit handlers (killed, or its output pipe closed),
 * the server must not outlive it. A tiny watchdog process holds a pipe from us: when the pipe
 * closes before we said "done", it kills the server.
 */
const WATCHDOG = `
  const pid = Number(process.argv[1]);
  let done = false;
  process.stdin.on('data', (d) => { if (String(d).includes('done')) done = true; });
  process.stdin.on('end', () => {
    if (!done) { try { process.kill(pid, 'SIGKILL'); } catch {} }
    process.exit(0);
  });
`;

function startWatchdog(pid) {
  const watchdog = spawn(process.execPath, ['-e', WATCHDOG, String(pid)], { stdio: ['pipe', 'ignore', 'ignore'] });
  watchdog.unref();
  watchdog.stdin.unref?.();
  watchdog.stdin.on('error', () => {});
  return watchdog;
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.unref();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** A random JWT secret, long enough for HS256. */
export function newSecret() {
  return randomBytes(32).toString('base64url');
}

/**
 * One headcount server. `start()` spawns it and resolves once the banner (with the anon key)
 * is printed; `stop()` sends SIGTERM and waits for the exit; `kill()` sends SIGKILL. The same
 * object can be started again on the same port with the same secret.
 */
export class HeadcountServer {
  constructor({ port, secret = newSecret(), idleTimeout, env = {} } = {}) {
    this.port = port;
    this.secret = secret;
    this.idleTimeout = idleTimeout;
    this.env = env;
    this.child = null;
    this.anonKey = null;
    this.stdout = '';
    this.stderr = '';
    this.exited = null;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** The last lines the server wrote on stderr, for failure messages. */
  logTail(lines = 40) {
    return this.stderr.split('\n').slice(-lines).join('\n');
  }

  async start() {
    if (this.child) throw new Error('server already running');
    const pickPort = this.port === undefined;
    // A port picked here may be taken by someone else before the server binds it: retry with
    // another one. A port given by the caller (a restart) is retried as is, a few times.
    for (let attempt = 1; ; attempt++) {
      if (pickPort) this.port = await freePort();
      try {
        await this.#spawn();
        return this;
      } catch (e) {
        if (!/cannot listen/.test(this.stderr) || attempt >= 5) throw e;
        await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
      }
    }
  }

  async #spawn() {
    // The `=` form: a random secret may start with a hyphen.
    const args = ['serve', '--bind', `127.0.0.1:${this.port}`, `--jwt-secret=${this.secret}`];
    if (this.idleTimeout !== undefined) args.push('--idle-timeout', String(this.idleTimeout));
    this.stdout = '';
    this.stderr = '';
    this.anonKey = null;
    const child = spawn(HEADCOUNT_BIN, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info', ...this.env },
    });
    this.child = child;
    live.add(child);
    const watchdog = child.pid ? startWatchdog(child.pid) : null;
    this.exited = new Promise((resolve) => {
      const gone = (code, signal) => {
        live.delete(child);
        watchdog?.stdin.end('done\n');
        if (this.child === child) this.child = null;
        resolve({ code, signal });
      };
      child.on('exit', gone);
      // A binary that cannot be started never exits.
      if (!child.pid) child.on('error', () => gone(null, null));
    });
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      this.stderr = (this.stderr + chunk).slice(-1_000_000);
      if (process.env.HEADCOUNT_ECHO_LOG) process.stderr.write(chunk);
    });
    const ready = new Promise((resolve, reject) => {
      child.on('error', (e) =>
        reject(new Error(`cannot run ${HEADCOUNT_BIN} (build it with \`cargo build -p headcount\` or set HEADCOUNT_BIN): ${e.message}`)),
      );
      child.stdout.on('data', (chunk) => {
        this.stdout += chunk;
        const key = /anon key: (\S+)/.exec(this.stdout);
        if (this.stdout.includes(BANNER) && key) {
          this.anonKey = key[1];
          resolve();
        }
      });
      this.exited.then(({ code, signal }) =>
        reject(new Error(`headcount exited before it was ready (code ${code}, signal ${signal})\n${this.logTail()}`)),
      );
    });
    try {
      await withTimeout(ready, START_TIMEOUT_MS, `the headcount banner on port ${this.port}`);
    } catch (e) {
      if (this.child === child) {
        child.kill('SIGKILL');
        await this.exited;
      }
      throw e;
    }
  }

  /** Sends `signal` and waits for the process to exit (SIGKILL after a deadline). */
  async stop(signal = 'SIGTERM') {
    const child = this.child;
    if (!child) return null;
    const exited = this.exited;
    child.kill(signal);
    try {
      return await withTimeout(exited, STOP_TIMEOUT_MS, `headcount to exit after ${signal}`);
    } catch (e) {
      child.kill('SIGKILL');
      await exited;
      throw e;
    }
  }

  /** Kills the process without letting it close anything. */
  kill() {
    return this.stop('SIGKILL');
  }
}

/**
 * Starts a server that is killed at teardown. `scope` is a test context (its `after` is used)
 * or node:test's module-level `after` function.
 */
export async function startServer(scope, options) {
  const server = new HeadcountServer(options);
  const onTeardown = typeof scope === 'function' ? scope : (fn) => scope.after(fn);
  onTeardown(() => server.kill());
  await server.start();
  return server;
}
