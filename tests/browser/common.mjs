// What the browser tests share: a database of their own, the service as a
// process, the CLI, callbacks, Chromium, and counting checks. Expects a
// built binary (BROWSER_TEST_BINARY, default target/debug/koostatus) and
// PostgreSQL at 127.0.0.1:5432.

import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { chromium } from 'playwright-core';

const BIN = process.env.BROWSER_TEST_BINARY ?? 'target/debug/koostatus';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}

export async function waitFor(what, fn, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
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

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
  });
}

/// One test file's service, database and results.
export class Harness {
  constructor(name) {
    this.db = `koostatus_browser_${name}_${process.pid}`;
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
      console.log(`ok: ${name}`);
    } catch (e) {
      this.results.push([name, false]);
      console.log(`FAILED: ${name}: ${e.stack ?? e}`);
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
    console.log(`browser: ${passed} passed, ${failed} failed`);
    process.exit(failed ? 1 : 0);
  }
}
