// The seed page's usage example, verbatim, and two components on one channel, in Chromium
// against the real server binary. The pages are built from test-pages/ and served from another
// origin than the server's, as an app would be.

import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { build } from 'vite';
import { launchChromium, openUser, seeText, serveTestPages, startHeadcount, webDir } from './harness.js';

let server;
let pages;
let browser;
let users = [];

async function open(query) {
  const params = new URLSearchParams({ url: server.url, key: server.anonKey, ...query });
  const user = await openUser(browser, `${pages.url}/test-pages/seed.html?${params}`);
  users.push(user);
  return user;
}

before(async () => {
  await build({ root: webDir, mode: 'test-pages', logLevel: 'warn' });
  [server, pages, browser] = await Promise.all([startHeadcount(), serveTestPages(), launchChromium()]);
});

after(async () => {
  await browser?.close();
  await pages?.close();
  await server?.stop();
});

afterEach(async () => {
  const errors = users.flatMap((u) => u.errors);
  await Promise.all(users.map((u) => u.context.close()));
  users = [];
  assert.deepEqual(errors, [], 'the pages reported errors');
});

describe('the seed example, verbatim', () => {
  it('shows the channel name, the number of users and the buttons', async () => {
    const first = await open({});
    await seeText(first.page, 'Connected to channel my-channel');
    await seeText(first.page, 'Number of users: 1');
    const second = await open({});
    for (const { page } of [first, second]) await seeText(page, 'Number of users: 2');
    await second.page.getByRole('button', { name: 'Go offline' }).click();
    await second.page.getByRole('button', { name: 'Go online' }).click();
    await seeText(first.page, 'Number of users: 2');

    await second.context.close();
    users = users.filter((u) => u !== second);
    await seeText(first.page, 'Number of users: 1');
  });
});

describe('two components on one channel', () => {
  it('share one channel: one user per page, and the page leaves only when both are gone', async () => {
    const channel = `double-${Date.now()}`;
    const ada = await open({ mode: 'double', channel, name: 'Ada' });
    const bob = await open({ mode: 'double', channel, name: 'Bob' });
    for (const { page } of [ada, bob]) {
      for (const section of ['#first', '#second']) {
        await page.locator(`${section} .count`).getByText('Number of users: 2').waitFor({ timeout: 10_000 });
      }
    }
    // Both of Ada's components contribute to her one presence: { name } and { status }.
    await bob.page.locator('#second li', { hasText: 'Ada: online' }).waitFor({ timeout: 10_000 });
    // Both of Bob's components got the join events.
    const joins = await bob.page.locator('#events li').allTextContents();
    assert.ok(joins.some((e) => e.startsWith('first join ')), `Bob's events: ${joins}`);
    assert.ok(joins.some((e) => e.startsWith('second join ')), `Bob's events: ${joins}`);

    // Removing one of Ada's components keeps her on the channel: Bob gets her next update (the
    // server sends Bob's frames in order, so a leave would have come first) and still counts 2.
    await ada.page.getByRole('button', { name: 'remove first' }).click();
    await ada.page.locator('#first').waitFor({ state: 'detached' });
    await ada.page.locator('#second').getByRole('button', { name: 'Go offline' }).click();
    await bob.page.locator('#first li', { hasText: 'Ada: offline' }).waitFor({ timeout: 10_000 });
    assert.equal(await bob.page.locator('#first .count').textContent(), 'Number of users: 2');
    await ada.page.locator('#second li', { hasText: 'Ada: offline' }).waitFor({ timeout: 10_000 });

    // Removing the other one leaves the channel.
    await ada.page.getByRole('button', { name: 'remove second' }).click();
    await bob.page.locator('#first .count').getByText('Number of users: 1').waitFor({ timeout: 10_000 });
    await bob.page.locator('#second .count').getByText('Number of users: 1').waitFor({ timeout: 10_000 });
  });
});
