// An agent desktop in a real browser (SPEC §8), Chromium or Firefox (the
// first argument): a page served from another
// origin reads a message with fetch and a bearer token, follows /events
// with a native EventSource and a stream ticket, sees a report sent during
// the test, and after the service restarts resumes without loss.
//
// Run by run.sh (which installs what it needs); expects a built binary
// (BROWSER_TEST_BINARY, default target/debug/koostatus) and PostgreSQL at
// 127.0.0.1:5432. Prints "N passed, N failed".

import { createServer } from 'node:http';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Harness, assert, freePort, launchBrowser, sleep, waitFor } from './common.mjs';

const CHANNEL = 'desk';
const PASSWORD = 'browser-test-webhook-password';
const USER = '8613800000001';
const t = new Harness('desktop');
const report = (port, messageId, status) =>
  t.report(port, CHANNEL, PASSWORD, { message_id: messageId, user_number: USER, status });
const check = (name, fn) => t.check(name, fn);

// The desktop page: what a contact centre's own web app would do.
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>desk</title>
<ul id="events"></ul>
<script>
  window.seen = [];
  window.opened = 0;
  window.openedAt = [];
  // Called by the test with where the API is and the agent's token.
  window.desk = async function (api, token, channel, user, messageId) {
    const message = await fetch(api + '/api/v1/channels/' + channel + '/messages/' + messageId, {
      headers: { authorization: 'Bearer ' + token },
    }).then((r) => r.json());
    window.message = message;
    const { ticket } = await fetch(api + '/api/v1/tickets', {
      method: 'POST',
      headers: { authorization: 'Bearer ' + token },
    }).then((r) => r.json());
    const source = new EventSource(api + '/api/v1/channels/' + channel + '/events?ticket=' +
      encodeURIComponent(ticket) + '&user_number=' + encodeURIComponent(user));
    source.onopen = () => {
      window.opened++;
      window.openedAt.push(Date.now());
    };
    source.addEventListener('change', (e) => {
      const change = JSON.parse(e.data);
      window.seen.push({ id: e.lastEventId, message_id: change.message_id, status: change.status });
      const li = document.createElement('li');
      li.textContent = change.message_id + ' ' + change.status;
      document.getElementById('events').append(li);
    });
    return message.status;
  };
</script>`;

async function main() {
  const apiPort = await freePort();
  const pagePort = await freePort();
  const pageOrigin = `http://127.0.0.1:${pagePort}`;
  const dir = mkdtempSync(join(tmpdir(), 'koostatus-browser-'));
  const configPath = join(dir, 'config.toml');
  writeFileSync(configPath, `[cors]\nallowed_origins = ["${pageOrigin}"]\n`);
  const pages = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(PAGE);
  });
  pages.listen(pagePort, '127.0.0.1');
  await once(pages, 'listening');

  let browser;
  try {
    await t.startServe(apiPort, configPath); // creates and migrates the database
    t.cli(['channel', 'add', CHANNEL, '--password-stdin'], `${PASSWORD}\n`);
    const token = t.cli(['token', 'create', '--name', 'agent']).trim();
    await report(apiPort, 'm1', 'delivered');

    browser = await launchBrowser();
    const page = await browser.newPage();
    const consoleErrors = [];
    page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
    await page.goto(pageOrigin);
    const api = `http://127.0.0.1:${apiPort}`;

    await check('fetch with a bearer token across origins reads a message', async () => {
      const status = await page.evaluate((a, t, c, u) => window.desk(a, t, c, u, 'm1'), api, token, CHANNEL, USER);
      assert(status === 'delivered', `status ${status}`);
      await waitFor('the stream to open', () => page.evaluate(() => window.opened === 1));
      assert(consoleErrors.length === 0, `console errors: ${consoleErrors}`);
    });

    await check('EventSource with a ticket sees a report sent during the test', async () => {
      const sent = Date.now();
      await report(apiPort, 'm1', 'read');
      await report(apiPort, 'm2', 'delivered');
      const seen = await waitFor('two events', async () => {
        const s = await page.evaluate(() => window.seen);
        return s.length >= 2 && s;
      }, 5000);
      assert(seen[0].message_id === 'm1' && seen[0].status === 'read', JSON.stringify(seen));
      assert(seen[1].message_id === 'm2', JSON.stringify(seen));
      console.log(`  pushed to the page within ${Date.now() - sent} ms`);
    });

    await check('after the service restarts the page resumes without loss', async () => {
      assert((await t.stopServe()) === 0, 'serve did not stop cleanly');
      await t.startServe(apiPort, configPath);
      // Changes while the page is still reconnecting (EventSource retries
      // after about 3 s): it must get them through Last-Event-ID.
      await report(apiPort, 'm3', 'delivered');
      await report(apiPort, 'm2', 'read');
      await report(apiPort, 'm4', 'failed');
      const sentAt = Date.now();
      const seen = await waitFor('the missed changes', async () => {
        const s = await page.evaluate(() => window.seen);
        return s.length >= 5 && s;
      }, 15000);
      await sleep(500);
      const all = await page.evaluate(() => window.seen);
      const got = all.map((e) => `${e.message_id}:${e.status}`);
      assert(
        JSON.stringify(got) === JSON.stringify(['m1:read', 'm2:delivered', 'm3:delivered', 'm2:read', 'm4:failed']),
        `events ${JSON.stringify(got)}`
      );
      const ids = all.map((e) => e.id);
      assert(new Set(ids).size === ids.length, 'an event came twice');
      assert((await page.evaluate(() => window.opened)) === 2, 'reconnected once, by itself');
      // The changes were made before the page reconnected: it got them by
      // resuming after its last event, not live.
      const reopened = (await page.evaluate(() => window.openedAt))[1];
      assert(reopened > sentAt, `reconnected ${sentAt - reopened} ms before the changes were made`);
      console.log(`  ${seen.length} events in order, none twice, after one reconnection`);
    });
  } finally {
    if (browser) await browser.close();
    pages.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(() => t.finish(), (e) => t.finish(e));
