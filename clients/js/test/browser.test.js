// The client in headless Chromium (Debian's chromium, which .ci/run
// installs; missing is a failure, not a skip), driven over the DevTools
// protocol with the ws package: the built dist/index.js, imported by a page
// as an ES module, against a real edge through the network proxy. A
// browser cannot see protocol pings, so the heartbeat is what finds a
// black-holed socket there.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import WebSocket from 'ws';

import { startGateway, eventually, stopAll, dumpLogs, tempDir } from '../../../sdk/node-lambda/test/harness.js';
import { NetworkProxy } from './proxy.js';

const lib = readFileSync(new URL('../dist/index.js', import.meta.url));
const page = `<!doctype html><title>switchboard-client</title>
<script type="module">
import { SwitchboardSocket } from "./switchboard-client.js";
window.SwitchboardSocket = SwitchboardSocket;
// Opens a client that records what it tells, on window.c.
window.open_ = (url, opts) => {
  const c = { messages: [], events: [] };
  c.sock = new SwitchboardSocket(url, opts);
  for (const t of ["open", "resumed", "recovered", "reconnecting", "close"]) {
    c.sock.addEventListener(t, (ev) => c.events.push({ type: t, code: ev.code, connectionId: ev.connectionId }));
  }
  c.sock.onmessage = (ev) => c.messages.push(String(ev.data));
  window.c = c;
};
window.ready = true;
</script>`;

/** A DevTools protocol session on one page. */
class Tab {
  constructor(url) {
    this.ws = new WebSocket(url);
    this.next = 1;
    this.pending = new Map();
    this.ws.on('message', (b) => {
      const m = JSON.parse(b.toString());
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error) p.reject(new Error(m.error.message));
      else p.resolve(m.result);
    });
    this.opened = new Promise((resolve, reject) => this.ws.once('open', resolve).once('error', reject));
  }

  call(method, params = {}) {
    const id = this.next++;
    this.ws.send(JSON.stringify({ id, method, params }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }

  /** The value of a JavaScript expression in the page. */
  async eval(expression) {
    const r = await this.call('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true });
    if (r.exceptionDetails) throw new Error(`${expression}: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value;
  }

  /** Waits until the expression is true in the page. */
  shows(what, expression) {
    return eventually(what, () => this.eval(`!!(${expression})`), 30000).catch(async (err) => {
      dumpLogs();
      const state = await this.eval('JSON.stringify(window.c ? { m: window.c.messages, e: window.c.events } : null)').catch(() => '?');
      throw new Error(`${err.message}; page: ${state}`);
    });
  }
}

function chromiumPath() {
  for (const name of ['chromium', 'chromium-browser', 'google-chrome']) {
    if (spawnSync(name, ['--version'], { stdio: 'ignore' }).status === 0) return name;
  }
  throw new Error('no chromium on PATH: apt-get install -y chromium (.ci/run does)');
}

/**
 * Starts headless Chromium in a process group of its own (its helper
 * processes inherit its output; killing the group ends them all, at the
 * end and if this process exits first) and resolves with its DevTools port.
 */
function startChromium() {
  const proc = spawn(chromiumPath(), ['--headless', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
    '--no-first-run', '--remote-debugging-port=0', `--user-data-dir=${tempDir('switchboard-chromium-')}`, 'about:blank'],
  { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  const kill = () => {
    try {
      process.kill(-proc.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  process.on('exit', kill);
  stopChromium = kill;
  return new Promise((resolve, reject) => {
    let out = '';
    proc.once('exit', (code) => reject(new Error(`chromium exited (${code}): ${out.slice(-2000)}`)));
    proc.stderr.on('data', (b) => {
      out += b.toString();
      const m = /DevTools listening on ws:\/\/127\.0\.0\.1:(\d+)\//.exec(out);
      if (m) {
        proc.stderr.destroy();
        resolve(m[1]);
      }
    });
  });
}

let gw, net, server, pageURL, tab;
let stopChromium = () => {};

before(async () => {
  gw = await startGateway({ prefix: 'jsbrowser', router: false, edgeArgs: ['-app-ping', 'ping'] });
  net = new NetworkProxy(Number(new URL(gw.wsURL).port));
  await net.start();
  server = http.createServer((req, res) => {
    if (req.url === '/switchboard-client.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript' }).end(lib);
    } else {
      res.writeHead(200, { 'Content-Type': 'text/html' }).end(page);
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  pageURL = `http://127.0.0.1:${server.address().port}/`;

  const port = await startChromium();
  const targets = await eventually('a page target', async () => {
    const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
    return list.find((t) => t.type === 'page') && list;
  });
  tab = new Tab(targets.find((t) => t.type === 'page').webSocketDebuggerUrl);
  await tab.opened;
  await tab.call('Page.navigate', { url: pageURL });
  await tab.shows('the page imported the client', 'window.ready');
});

after(async () => {
  await tab?.eval('window.c && window.c.sock.close()').catch(() => {});
  tab?.ws.close();
  stopChromium();
  await net?.close();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve()));
  await stopAll();
});

async function post(id, text) {
  const r = await fetch(`${gw.edgeAPI}/@connections/${id}`, { method: 'POST', body: text });
  assert.equal(r.status, 200, `POST ${text}: ${r.status}`);
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => `m${from + i}`);

test('in Chromium: a reset connection resumes with every message once, in order, and the queued send after it', async () => {
  net.up();
  await tab.eval(`window.open_(${JSON.stringify(net.url + '/')}, { backoff: { minDelayMs: 20, maxDelayMs: 200 } })`);
  await tab.shows('open', 'c.events.some((e) => e.type === "open")');
  const id = await tab.eval('c.sock.connectionId');
  for (const m of range(1, 3)) await post(id, m);
  await tab.shows('first three', 'c.messages.length === 3');

  net.down();
  await tab.shows('reconnecting', 'c.sock.readyState === 0 && c.events.some((e) => e.type === "reconnecting")');
  await eventually('detached at the edge', async () => (await (await fetch(`${gw.edgeAPI}/@connections/${id}`)).json()).detached === true);
  for (const m of range(4, 12)) await post(id, m);
  assert.equal(await tab.eval('c.sock.send("ping")'), true, 'queued while away');
  net.up();

  await tab.shows('resumed', 'c.events.some((e) => e.type === "resumed")');
  await tab.shows('all and the pong', 'c.messages.length === 13');
  assert.deepEqual(await tab.eval('c.messages'), [...range(1, 12), 'pong']);
  assert.equal(await tab.eval('c.sock.connectionId'), id);
  assert.equal(await tab.eval('c.events.filter((e) => e.type === "recovered").length'), 0);
  assert.equal(await tab.eval('c.events.find((e) => e.type === "reconnecting").code'), 1006);
  await tab.eval('c.sock.close()');
  await tab.shows('closed', 'c.sock.readyState === 3');
});

test('in Chromium: the heartbeat finds a black-holed socket dead and resumes past it', async () => {
  net.up();
  await tab.eval(`window.open_(${JSON.stringify(net.url + '/')}, { backoff: { minDelayMs: 20, maxDelayMs: 200 },
    heartbeat: { message: "ping", intervalMs: 100, timeoutMs: 400 } })`);
  await tab.shows('open', 'c.events.some((e) => e.type === "open")');
  const id = await tab.eval('c.sock.connectionId');
  await post(id, 'm1');
  await tab.shows('m1', 'c.messages.length === 1');

  net.blackhole();
  for (const m of range(2, 6)) await post(id, m);
  await tab.shows('resumed', 'c.events.some((e) => e.type === "resumed")');
  assert.equal(await tab.eval('c.events.find((e) => e.type === "reconnecting").code'), 4900);
  await tab.shows('all six', 'c.messages.length === 6');
  assert.deepEqual(await tab.eval('c.messages'), range(1, 6));
  assert.equal(await tab.eval('c.sock.connectionId'), id);
  await tab.eval('c.sock.close()');
  await tab.shows('closed', 'c.sock.readyState === 3');
});
