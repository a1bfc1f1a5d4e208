// The SvelteKit app of tests/consumer/app, built by run.sh with the packed @headcount/svelte and
// one supabase-js version ($SUPABASE_JS_VERSION), served by its adapter-node output, in Chromium
// against the real headcount binary: server rendering, the seed snippet, the Svelte 5 snippet
// form, BroadcastChannel.

import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { freePort, launchChromium, openUser, seeText, startHeadcount, within } from '../browser/harness.js';

const appDir = process.env.CONSUMER_APP_DIR;
const version = process.env.SUPABASE_JS_VERSION ?? 'unknown';
if (!appDir) throw new Error('CONSUMER_APP_DIR is not set: run tests/consumer/run.sh');

let server;
let app;
let browser;
let users = [];

/** Starts `command` in the app's directory and resolves once its output matches `ready`. */
async function startApp(command, args, env, ready) {
  const child = spawn(command, args, { cwd: appDir, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const handle = { child, log: '' };
  const started = new Promise((resolve, reject) => {
    const onData = (d) => {
      handle.log += d;
      // Tools print in colour when CI is set: match the text without the escape codes.
      if (ready.test(handle.log.replace(/\x1b\[[0-9;]*m/g, ''))) resolve();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${command} exited (${code}):\n${handle.log}`)));
  });
  try {
    await within(20_000, `${command} ${args.join(' ')} to listen`, started);
  } catch (err) {
    // A server that never said it listens must not outlive the test (it would hold the run).
    child.kill('SIGKILL');
    throw err;
  }
  handle.stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await within(10_000, `${command} to exit`, exited);
  };
  return handle;
}

async function startNodeBuild() {
  const port = await freePort();
  const handle = await startApp(process.execPath, ['build'], { PORT: String(port), HOST: '127.0.0.1' }, /Listening on/);
  return { ...handle, url: `http://127.0.0.1:${port}` };
}

/** A service_role token signed with the server's secret, for its admin API. */
function serviceToken() {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ role: 'service_role', exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${body}.${createHmac('sha256', server.secret).update(body).digest('base64url')}`;
}

/** How many sockets the server has open now. */
async function openSockets() {
  const res = await fetch(`${server.url}/admin/api/stats`, { headers: { authorization: `Bearer ${serviceToken()}` } });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()).connections;
}

function address(base, route) {
  const params = new URLSearchParams({ url: server.url, key: server.anonKey });
  return `${base}${route}?${params}`;
}

async function open(route) {
  const user = await openUser(browser, address(app.url, route));
  users.push(user);
  return user;
}

async function close(user) {
  await user.context.close();
  users = users.filter((u) => u !== user);
}

before(async () => {
  // One at a time, so that `after` stops whatever started when one of them fails.
  server = await startHeadcount();
  app = await startNodeBuild();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await app?.stop();
  await server?.stop();
});

afterEach(async () => {
  const errors = users.flatMap((u) => u.errors);
  await Promise.all(users.map((u) => u.context.close()));
  users = [];
  assert.deepEqual(errors, [], 'the pages reported errors');
});

describe(`server rendering (supabase-js ${version})`, () => {
  it('answers every route with 200 and the Loading... branch, opening no socket', async () => {
    for (const route of ['/', '/snippet', '/broadcast']) {
      const res = await fetch(address(app.url, route));
      const body = await res.text();
      assert.equal(res.status, 200, `${route}: ${body.slice(0, 500)}`);
      assert.match(body, /Loading\.\.\./, route);
      assert.doesNotMatch(body, /Error:/, route);
    }
    // A socket opened during server rendering would still be open on the server.
    assert.equal(await openSockets(), 0, 'server rendering opened a socket');
    assert.doesNotMatch(app.log, /Error/, 'the app server logged an error');
  });

  it('works with vite preview too', async () => {
    const port = await freePort();
    const preview = await startApp(
      process.execPath,
      ['node_modules/vite/bin/vite.js', 'preview', '--host', '127.0.0.1', '--port', String(port), '--strictPort'],
      {},
      /Local:/,
    );
    try {
      const res = await fetch(address(`http://127.0.0.1:${port}`, '/'));
      assert.equal(res.status, 200);
      assert.match(await res.text(), /Loading\.\.\./);
    } finally {
      await preview.stop();
    }
  });
});

describe(`the seed snippet, verbatim, in a runes-mode app (supabase-js ${version})`, () => {
  it('counts two pages, shows the offline status on the other page, and counts one after a leave', async () => {
    const ada = await open('/');
    await seeText(ada.page, 'Connected to channel my-channel');
    await seeText(ada.page, 'Number of users: 1');
    const bob = await open('/');
    for (const { page } of [ada, bob]) await seeText(page, 'Number of users: 2');
    // on:join reached the page's handler.
    await bob.page.locator('#joins', { hasText: /joins seen: [1-9]/ }).waitFor({ timeout: 10_000 });

    await ada.page.getByRole('button', { name: 'Go offline' }).click();
    await bob.page.locator('#people li', { hasText: 'offline' }).first().waitFor({ timeout: 10_000 });
    // A key that updated its status and then left is gone (supabase-js 2.109 keeps it).
    await close(ada);
    await seeText(bob.page, 'Number of users: 1');
  });
});

describe(`the Svelte 5 form: children snippet, onjoin/onleave (supabase-js ${version})`, () => {
  it('counts, shows statuses, calls the callbacks, and says when a status waits for the rate limit', async () => {
    const ada = await open('/snippet');
    await seeText(ada.page, 'Number of users: 1');
    const bob = await open('/snippet');
    for (const { page } of [ada, bob]) await seeText(page, 'Number of users: 2');
    await bob.page.locator('#log li', { hasText: /^join / }).first().waitFor({ timeout: 10_000 });

    await ada.page.getByRole('button', { name: 'Go offline' }).click();
    assert.equal(await ada.page.locator('#me').textContent(), 'You: offline');
    await bob.page.locator('#people li', { hasText: 'offline' }).first().waitFor({ timeout: 10_000 });

    // The join's track and this first update used 2 of the 5 calls per 30 s. Quick changes show
    // at once on Ada's page; the one past the limit says it waits.
    let waiting = false;
    let status = 'offline';
    for (let click = 0; click < 6 && !waiting; click += 1) {
      status = status === 'offline' ? 'online' : 'offline';
      await ada.page.getByRole('button', { name: status === 'online' ? 'Go online' : 'Go offline' }).click();
      const me = (await ada.page.locator('#me').textContent()).trim();
      assert.ok(me.startsWith(`You: ${status}`), `after choosing ${status} the page shows "${me}"`);
      waiting = me.endsWith('(waiting for the rate limit)');
    }
    assert.ok(waiting, 'no status waited for the rate limit');

    await close(ada);
    await seeText(bob.page, 'Number of users: 1');
    await bob.page.locator('#log li', { hasText: /^leave / }).first().waitFor({ timeout: 10_000 });
  });
});

describe(`BroadcastChannel (supabase-js ${version})`, () => {
  it('shows on the other page, in both dialects, a message sent on one page', async () => {
    const ada = await open('/broadcast');
    const bob = await open('/broadcast');
    for (const { page } of [ada, bob]) await page.locator('#text').waitFor({ timeout: 10_000 });
    await ada.page.locator('#text').fill('hello from Ada');
    await ada.page.getByRole('button', { name: 'Send' }).click();
    await seeText(bob.page, 'Last message: hello from Ada');
    await seeText(bob.page, 'Legacy form: hello from Ada');
    // broadcast.self is off by default: the sender does not get its own message.
    assert.equal(await ada.page.locator('#received').textContent(), 'Last message: none');
  });
});
