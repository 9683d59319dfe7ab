// What the browser tests share: a database of their own, the service as a
// process, the CLI, callbacks, the two browser engines, and counting
// checks. Expects a built binary (BROWSER_TEST_BINARY, default
// target/debug/koostatus) and PostgreSQL at 127.0.0.1:5432.

import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import puppeteer from 'puppeteer-core';

const BIN = process.env.BROWSER_TEST_BINARY ?? 'target/debug/koostatus';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}

/// Polls `fn` until it gives a truthy value; on timeout the error names
/// `what` and, when given, what `describe` says was there instead.
export async function waitFor(what, fn, ms = 10000, describe = null) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${describe ? `: ${await describe()}` : ''}`);
    await sleep(50);
  }
}

export async function freePort() {
  const s = net.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = s.address().port;
  s.close();
  return port;
}

/// The engine a test file runs in: its first argument, `chrome` (Debian's
/// Chromium, over CDP) or `firefox` (Debian's firefox-esr, over WebDriver
/// BiDi). puppeteer gives each launch a fresh profile.
export const ENGINE = process.argv[2] ?? 'chrome';

export function launchBrowser() {
  if (ENGINE === 'firefox') {
    return puppeteer.launch({
      browser: 'firefox',
      executablePath: process.env.FIREFOX ?? '/usr/bin/firefox-esr',
      headless: true,
      // Firefox opens its downloads panel at a download, and the panel then
      // takes the keys: a person would close it; the tests keep it shut.
      extraPrefsFirefox: { 'browser.download.alwaysOpenPanel': false },
    });
  }
  if (ENGINE !== 'chrome') throw new Error(`unknown engine ${ENGINE}: chrome or firefox`);
  return puppeteer.launch({
    browser: 'chrome',
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
  });
}

// What a page shows, asked of the rendered page (layout and style), not of
// attributes: an element hidden by CSS or inside a hidden parent is not
// visible.
export const textOf = (page, selector) => page.$eval(selector, (e) => e.textContent);
export const count = async (page, selector) => (await page.$$(selector)).length;
export const visible = (page, selector) => page.$eval(selector, (e) => {
  const box = e.getBoundingClientRect();
  return e.checkVisibility({ visibilityProperty: true }) && box.width > 0 && box.height > 0;
});
/// Types `value` into the field as a person would (replacing what it held).
export async function fill(page, selector, value) {
  await page.$eval(selector, (e) => { e.value = ''; });
  await page.focus(selector);
  if (value) await page.keyboard.type(value);
}
export async function press(page, selector, key) {
  await page.focus(selector);
  await page.keyboard.press(key);
}

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/// axe-core's WCAG checks of the page as shown now: the serious and
/// critical violations, as sentences (empty when clean).
export async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => (await window.axe.run(document, {
    runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'],
  })).violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 3) })));
  return violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.join(', ')}`);
}

/// One test file's service, database and results.
export class Harness {
  constructor(name) {
    this.db = `koostatus_browser_${name}_${ENGINE}_${process.pid}`;
    this.dbUrl = `postgres://postgres@127.0.0.1:5432/${this.db}`;
    this.server = null;
    this.serverLog = '';
    this.results = [];
  }

  cli(args, stdin = '') {
    return execFileSync(BIN, ['--database-url', this.dbUrl, ...args], {
      input: stdin,
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'ignore'],
    });
  }

  /// Starts `serve` (which creates and migrates the database) and waits
  /// until it is ready.
  async startServe(port, configPath) {
    const args = ['--database-url', this.dbUrl, 'serve', '--listen', `127.0.0.1:${port}`];
    if (configPath) args.unshift('--config', configPath);
    this.server = spawn(BIN, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, KOOSTATUS_LOG__FILTER: 'warn' },
    });
    this.server.stderr.on('data', (d) => (this.serverLog += d));
    await waitFor('the service', async () => {
      if (this.server.exitCode !== null) throw new Error(`serve exited: ${this.serverLog}`);
      try {
        return (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200;
      } catch {
        return false;
      }
    }, 30000);
  }

  async stopServe() {
    const exited = once(this.server, 'exit');
    this.server.kill('SIGTERM');
    const [code] = await exited;
    return code;
  }

  async report(port, channel, password, body) {
    const r = await fetch(`http://127.0.0.1:${port}/social/on/whatsapp/koomessage/report/${channel}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: password },
      body: JSON.stringify({ sender: '86173xxxx4526', ...body }),
    });
    assert(r.status === 200, `report ${body.message_id} answered ${r.status}`);
  }

  async check(name, fn) {
    try {
      await fn();
      this.results.push([name, true]);
      console.log(`ok (${ENGINE}): ${name}`);
    } catch (e) {
      this.results.push([name, false]);
      console.log(`FAILED (${ENGINE}): ${name}: ${e.stack ?? e}`);
    }
  }

  /// Stops the service, drops the database, prints the count and exits.
  async finish(error) {
    if (this.server && this.server.exitCode === null) await this.stopServe();
    try {
      execFileSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-qc', `drop database if exists ${this.db} with (force)`]);
    } catch {}
    if (error) {
      console.log(error.stack ?? error);
      this.results.push(['the test itself', false]);
    }
    const passed = this.results.filter(([, ok]) => ok).length;
    const failed = this.results.length - passed;
    if (failed) console.log(this.serverLog);
    console.log(`browser (${ENGINE}): ${passed} passed, ${failed} failed`);
    process.exit(failed ? 1 : 0);
  }
}
