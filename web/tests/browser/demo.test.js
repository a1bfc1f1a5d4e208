// The demo page that `headcount serve` embeds, in Chromium, against the real server binary.

import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  launchChromium,
  openUser,
  seeLog,
  seeNoPerson,
  seePerson,
  seeText,
  startHeadcount,
} from './harness.js';

const room = () => `room-${randomBytes(4).toString('hex')}`;

let server;
let browser;
/** Users opened by the running test, closed (and checked for errors) after it. */
let users = [];

async function open(name, channel, options) {
  const user = await openUser(
    browser,
    `${server.url}/?channel=${encodeURIComponent(channel)}&name=${encodeURIComponent(name)}`,
    options,
  );
  users.push(user);
  return user;
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

describe('the demo page', () => {
  it('is served with its anon key and shows the seed texts', async () => {
    const channel = room();
    const ada = await open('Ada', channel);
    await seeText(ada.page, `Connected to channel ${channel}`);
    await seeText(ada.page, 'Number of users: 1');
    await ada.page.getByRole('button', { name: 'Go online' }).waitFor();
    await ada.page.getByRole('button', { name: 'Go offline' }).waitFor();
    await seePerson(ada.page, 'Ada (you)', 'online');
    await seeLog(ada.page, 'Ada (you) joined');
  });

  it('defaults to the channel "any"', async () => {
    const ada = await openUser(browser, `${server.url}/`);
    users.push(ada);
    await seeText(ada.page, 'Connected to channel any');
  });

  it('two pages on one channel see each other', async () => {
    const channel = room();
    const ada = await open('Ada', channel);
    const bob = await open('Bob', channel);
    for (const { page } of [ada, bob]) await seeText(page, 'Number of users: 2');
    await seePerson(ada.page, 'Bob', 'online');
    await seePerson(bob.page, 'Ada', 'online');
    await seeLog(ada.page, 'Bob joined');
  });

  it('two tabs of one browser are two users', async () => {
    const channel = room();
    const first = await open('Ada', channel);
    const second = await openUser(browser, `${server.url}/?channel=${channel}&name=Bob`, {
      context: first.context,
    });
    users.push(second); // closing the shared context twice is harmless
    for (const { page } of [first, second]) await seeText(page, 'Number of users: 2');
  });

  it('three pages count three, and Go offline shows on the others', async () => {
    const channel = room();
    const ada = await open('Ada', channel);
    const bob = await open('Bob', channel);
    const cy = await open('Cy', channel);
    for (const { page } of [ada, bob, cy]) await seeText(page, 'Number of users: 3');
    // Another channel does not count.
    const other = await open('Dee', room());
    await seeText(other.page, 'Number of users: 1');

    await ada.page.getByRole('button', { name: 'Go offline' }).click();
    await seePerson(bob.page, 'Ada', 'offline');
    await seePerson(cy.page, 'Ada', 'offline');
    await seePerson(ada.page, 'Ada (you)', 'offline');
    await seeLog(bob.page, 'Ada is now offline');
    for (const { page } of [ada, bob, cy]) await seeText(page, 'Number of users: 3');

    await ada.page.getByRole('button', { name: 'Go online' }).click();
    await seePerson(cy.page, 'Ada', 'online');
  });

  it('closing a page gives a leave', async () => {
    const channel = room();
    const ada = await open('Ada', channel);
    const bob = await open('Bob', channel);
    const cy = await open('Cy', channel);
    for (const { page } of [ada, bob, cy]) await seeText(page, 'Number of users: 3');

    await cy.context.close();
    users = users.filter((u) => u !== cy);
    for (const { page } of [ada, bob]) {
      await seeLog(page, 'Cy left');
      await seeText(page, 'Number of users: 2');
      await seeNoPerson(page, 'Cy');
    }
  });

  for (const signal of ['SIGKILL', 'SIGTERM']) {
    it(`recovers every page without a reload when the server restarts (${signal})`, async () => {
      const channel = room();
      const ada = await open('Ada', channel);
      const bob = await open('Bob', channel);
      const cy = await open('Cy', channel);
      const all = [ada, bob, cy];
      for (const { page } of all) await seeText(page, 'Number of users: 3');
      // A status set before the restart must be tracked again after it.
      await ada.page.getByRole('button', { name: 'Go offline' }).click();
      await seePerson(bob.page, 'Ada', 'offline');
      for (const user of all) {
        await user.page.evaluate(() => {
          window.__sameDocument = true;
        });
        // Chromium logs failed reconnection attempts while the server is down.
        user.allow.push(/WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/realtime\/v1\/websocket.*' failed/);
      }

      await server.stop(signal);
      for (const { page } of all) await seeText(page, /^Error: Channel room-\w+ error: CHANNEL_ERROR/);
      await server.restart();

      for (const { page } of all) {
        await seeText(page, 'Number of users: 3', 30_000);
        await seePerson(page, page === ada.page ? 'Ada (you)' : 'Ada', 'offline');
        await seePerson(page, page === bob.page ? 'Bob (you)' : 'Bob', 'online');
        assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was reloaded');
        assert.equal(await page.getByText(/^Error:/).count(), 0);
      }
    });
  }

  it('spaces out rapid status changes to stay within the presence rate limit', async () => {
    const channel = room();
    /** @type {number[]} when Ada's page sent presence calls */
    const presenceCalls = [];
    const ada = await open('Ada', channel, {
      beforeLoad: (page) =>
        page.on('websocket', (ws) =>
          ws.on('framesent', ({ payload }) => {
            if (typeof payload === 'string' && JSON.parse(payload)[3] === 'presence') presenceCalls.push(Date.now());
          }),
        ),
    });
    const bob = await open('Bob', channel);
    for (const { page } of [ada, bob]) await seeText(page, 'Number of users: 2');
    await seePerson(bob.page, 'Ada', 'online');

    const offline = ada.page.getByRole('button', { name: 'Go offline' });
    const online = ada.page.getByRole('button', { name: 'Go online' });
    for (let i = 0; i < 6; i += 1) {
      await offline.click();
      await online.click();
    }
    await offline.click();
    // The last status arrives once the budget allows, about 30 s after the first call.
    await seePerson(bob.page, 'Ada', 'offline', 45_000);

    assert.ok(presenceCalls.length >= 2, `saw ${presenceCalls.length} presence calls`);
    for (const t of presenceCalls) {
      const inWindow = presenceCalls.filter((u) => u >= t && u < t + 30_000).length;
      assert.ok(inWindow <= 5, `${inWindow} presence calls within 30 s: ${presenceCalls}`);
    }
    assert.equal(await ada.page.getByText(/^Error:/).count(), 0);
    await seeText(ada.page, 'Number of users: 2');
  });
});
