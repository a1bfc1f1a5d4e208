// The admin page (`/admin`) in Chromium, against the real server binary: it asks for a
// service_role key, refuses another role, then shows the channels that demo pages joined,
// with their counts, the presence of one channel, and live stats.

import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { launchChromium, openUser, seeText, startHeadcount } from './harness.js';

const room = () => `ops-${randomBytes(4).toString('hex')}`;

/** An HS256 JWT signed here, independently of the server. */
function sign(secret, claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

const tokenFor = (secret, role) => {
  const now = Math.floor(Date.now() / 1000);
  return sign(secret, { role, sub: `${role}-user`, iat: now, exp: now + 600 });
};

let server;
let browser;
let users = [];

async function open(url, options) {
  const user = await openUser(browser, url, options);
  users.push(user);
  return user;
}

/** Signs in on the admin page with `key`. */
async function signIn(page, key) {
  await page.getByLabel('service_role key').fill(key);
  await page.getByRole('button', { name: 'Open' }).click();
}

/** The channel row of `topic`, once its counts are as given (bounded). */
async function seeChannel(page, topic, { members, keys, presences }, timeout = 10_000) {
  const selector =
    `#channels tr[data-topic="${topic}"][data-members="${members}"]` +
    `[data-keys="${keys}"][data-presences="${presences}"]`;
  await page.locator(selector).waitFor({ state: 'visible', timeout });
  return page.locator(selector);
}

before(async () => {
  server = await startHeadcount();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

afterEach(async () => {
  const errors = users.flatMap((u) => u.errors);
  await Promise.all(users.map((u) => u.context.close()));
  users = [];
  assert.deepEqual(errors, [], 'the pages reported errors');
});

describe('the admin page', () => {
  it('shows the channels that pages joined, with their counts and presence', async () => {
    const channel = room();
    const demo = (name) => `${server.url}/?channel=${channel}&name=${name}`;
    const ada = await open(demo('Ada'));
    const bob = await open(demo('Bob'));
    for (const { page } of [ada, bob]) await seeText(page, 'Number of users: 2');

    const admin = await open(`${server.url}/admin`, { viewport: { width: 1280, height: 900 } });
    // Another role is refused, with a message (the browser logs the 403 it got).
    admin.allow.push(/status of 403/);
    await signIn(admin.page, tokenFor(server.secret, 'anon'));
    await seeText(admin.page, 'This key is valid but its role is not service_role.');

    await signIn(admin.page, tokenFor(server.secret, 'service_role'));
    await admin.page.locator('#status[data-state="live"]').waitFor({ timeout: 10_000 });
    const row = await seeChannel(admin.page, channel, { members: 2, keys: 2, presences: 2 });
    await admin.page
      .locator('[data-stat="connections"][data-value="2"]')
      .waitFor({ state: 'attached', timeout: 10_000 });

    // The presence of the channel: one entry per page, with what the page tracks.
    await row.click();
    await seeText(admin.page, channel);
    await admin.page.locator('#presence .presence-key').nth(1).waitFor({ timeout: 10_000 });
    assert.equal(await admin.page.locator('#presence .presence-key').count(), 2);
    const shown = await admin.page.locator('#presence').innerText();
    for (const name of ['Ada', 'Bob']) assert.ok(shown.includes(name), `${name} in the presence view:\n${shown}`);

    // A page that leaves is gone from the counts.
    await bob.context.close();
    users = users.filter((u) => u !== bob);
    await seeChannel(admin.page, channel, { members: 1, keys: 1, presences: 1 });
    await admin.page.locator('#presence .presence-key').nth(1).waitFor({ state: 'detached', timeout: 10_000 });

    // The key stays in this tab: a reload does not ask again.
    await admin.page.reload();
    await seeChannel(admin.page, channel, { members: 1, keys: 1, presences: 1 });
  });

  it('disconnects a connection from its row', async () => {
    const channel = room();
    const ada = await open(`${server.url}/?channel=${channel}&name=Ada`);
    await seeText(ada.page, 'Number of users: 1');
    const admin = await open(`${server.url}/admin`);
    await signIn(admin.page, tokenFor(server.secret, 'service_role'));
    await seeChannel(admin.page, channel, { members: 1, keys: 1, presences: 1 });

    // The demo page's socket is the only one left once the earlier tests' pages are gone.
    const rows = admin.page.locator('#conns tbody tr[data-conn]');
    await admin.page.waitForFunction(() => document.querySelectorAll('#conns tbody tr[data-conn]').length === 1, null, {
      timeout: 10_000,
    });
    const before = await rows.first().getAttribute('data-conn');
    const row = admin.page.locator(`#conns tbody tr[data-conn="${before}"]`);
    await row.getByRole('button', { name: 'Disconnect', exact: true }).click();
    // The first click arms the button; the second, within a few seconds, confirms.
    await row.getByRole('button', { name: 'Confirm' }).click();
    // The demo page reconnects by itself, on a new connection.
    await admin.page
      .locator(`#conns tbody tr[data-conn="${before}"]`)
      .waitFor({ state: 'detached', timeout: 10_000 });
    await seeChannel(admin.page, channel, { members: 1, keys: 1, presences: 1 }, 20_000);
  });
});
