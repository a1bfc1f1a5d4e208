// Takes docs/demo.png: the demo page with two people present, one of them offline.
// Usage: node scripts/screenshot.js [output.png]   (HEADCOUNT_BIN and CHROMIUM_BIN as for the tests)

import path from 'node:path';
import { launchChromium, openUser, seeLog, seePerson, seeText, startHeadcount, webDir } from '../tests/browser/harness.js';

const output = path.resolve(process.argv[2] ?? path.join(webDir, '../docs/demo.png'));
const server = await startHeadcount();
const browser = await launchChromium();
try {
  const viewport = { width: 1040, height: 560 };
  const url = (name) => `${server.url}/?channel=lobby&name=${name}`;
  const ada = await openUser(browser, url('Ada'), { viewport });
  await seeText(ada.page, 'Number of users: 1');
  const linus = await openUser(browser, url('Linus'), { viewport });
  await seeText(ada.page, 'Number of users: 2');
  await linus.page.getByRole('button', { name: 'Go offline' }).click();
  await seePerson(ada.page, 'Linus', 'offline');
  await seeLog(ada.page, 'Linus is now offline');
  await ada.page.screenshot({ path: output, fullPage: true });
  const errors = [...ada.errors, ...linus.errors];
  if (errors.length > 0) throw new Error(`the pages reported errors: ${errors.join('; ')}`);
  console.log(`wrote ${output}`);
} finally {
  await browser.close();
  await server.stop();
}
