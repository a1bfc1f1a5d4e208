// What the browser tests share: the real headcount binary on a loopback port, Debian's Chromium
// driven by playwright-core, a static server for the test pages, and bounded waits.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

export const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const repoDir = path.resolve(webDir, '..');

export const HEADCOUNT_BIN = process.env.HEADCOUNT_BIN || path.join(repoDir, 'target/debug/headcount');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

/** A port that was free a moment ago (the server must bind it again after a restart). */
export async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

/** Rejects after `ms` with `what` in the message, unless `promise` settles first. */
export function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Runs `headcount serve` on 127.0.0.1:port and resolves once its banner shows the anon key.
 * `restart()` kills it and starts it again on the same port with the same secret.
 */
export async function startHeadcount({ port, secret = randomBytes(24).toString('base64url') } = {}) {
  port ??= await freePort();
  const handle = { port, secret, url: `http://127.0.0.1:${port}`, anonKey: '', child: null, log: '' };

  async function start() {
    const child = spawn(
      HEADCOUNT_BIN,
      ['serve', '--bind', `127.0.0.1:${port}`, '--jwt-secret', secret],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } },
    );
    handle.child = child;
    child.stderr.on('data', (d) => {
      handle.log += d;
    });
    let out = '';
    const ready = new Promise((resolve, reject) => {
      child.stdout.on('data', (d) => {
        out += d;
        const m = out.match(/anon key: (\S+)/);
        if (m) resolve(m[1]);
      });
      child.once('exit', (code) => reject(new Error(`headcount exited (${code}) before listening:\n${handle.log}`)));
      child.once('error', reject);
    });
    handle.anonKey = await within(15_000, 'headcount to start', ready);
  }

  async function stop(signal = 'SIGTERM') {
    const child = handle.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill(signal);
    await within(10_000, `headcount to exit on ${signal}`, exited);
  }

  handle.stop = stop;
  handle.restart = async (signal = 'SIGKILL') => {
    await stop(signal);
    await start();
  };
  await start();
  return handle;
}

/** Serves the built test pages (.test-dist) on 127.0.0.1. */
export async function serveTestPages() {
  const root = path.join(webDir, '.test-dist');
  const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css' };
  const server = createServer(async (req, res) => {
    const pathname = new URL(req.url, 'http://x').pathname;
    const file = path.join(root, path.normalize(pathname));
    if (!file.startsWith(root + path.sep)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

export async function launchChromium() {
  // playwright-core gives every launch a fresh temporary profile (its own --user-data-dir).
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * Opens `url` in a new browser context (one user) and records its page errors and console
 * errors. `allow` lists console messages that are expected (a server that is down, say);
 * `beforeLoad(page)` runs before the page is loaded; `context` opens it as a tab of that context.
 */
export async function openUser(
  browser,
  url,
  { viewport = { width: 1100, height: 800 }, beforeLoad, context = undefined } = {},
) {
  context ??= await browser.newContext({ viewport });
  const page = await context.newPage();
  const user = { context, page, errors: [], allow: [] };
  beforeLoad?.(page);
  page.on('pageerror', (e) => user.errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    if (!user.allow.some((re) => re.test(text))) user.errors.push(`console.error: ${text}`);
  });
  await page.goto(url);
  return user;
}

/** Waits until `page` shows `text` somewhere (bounded). */
export async function seeText(page, text, timeout = 10_000) {
  await page.getByText(text, { exact: typeof text === 'string' }).first().waitFor({ state: 'visible', timeout });
}

/** Waits until the demo's list shows `name` with `status` (bounded). */
export async function seePerson(page, name, status, timeout = 10_000) {
  await page
    .locator(`li[data-person="${name}"][data-status="${status}"]`)
    .waitFor({ state: 'visible', timeout });
}

/** Waits until the demo's activity log has an entry ending with `text` (bounded). */
export async function seeLog(page, text, timeout = 10_000) {
  const escaped = text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  await page
    .locator('.log li', { hasText: new RegExp(`\\s${escaped}$`) })
    .first()
    .waitFor({ state: 'visible', timeout });
}

/** Waits until the demo's list has no entry for `name` (bounded). */
export async function seeNoPerson(page, name, timeout = 10_000) {
  await page.locator(`li[data-person="${name}"]`).waitFor({ state: 'detached', timeout });
}
