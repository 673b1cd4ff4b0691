// Reconnect delays and the rule that decides whether a close is worth a
// reconnect; then the delays a client really waits against a port where
// nothing listens, and its giving up after maxRetries.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import WebSocket from 'ws';

import { SwitchboardSocket, backoffDelay, shouldReconnect } from '../dist/index.js';

test('delays grow by factor from minDelayMs up to maxDelayMs; jitter takes up to its fraction off', () => {
  const o = { minDelayMs: 100, maxDelayMs: 1000, factor: 2, jitter: 0.5 };
  const top = [1, 2, 3, 4, 5, 6, 50].map((n) => backoffDelay(n, o, () => 0));
  assert.deepEqual(top, [100, 200, 400, 800, 1000, 1000, 1000]);
  const bottom = [1, 2, 3, 4, 5, 6, 50].map((n) => backoffDelay(n, o, () => 1));
  assert.deepEqual(bottom, [50, 100, 200, 400, 500, 500, 500]);
  assert.equal(backoffDelay(3, { ...o, jitter: 0 }, Math.random), 400);
  // The defaults: 250 ms doubling to 10 s, half of it at random.
  assert.equal(backoffDelay(1, {}, () => 0), 250);
  assert.equal(backoffDelay(100, {}, () => 0), 10000);
  assert.equal(backoffDelay(100, {}, () => 1), 5000);
});

test('closes the application or the server meant end it; lost sockets and restarts reconnect', () => {
  for (const code of [1000, 1002, 1003, 1007, 1008, 1009, 1010, 4000, 4401, 4999]) assert.equal(shouldReconnect(code), false, `code ${code}`);
  for (const code of [1001, 1005, 1006, 1011, 1012, 1013, 1014, 1015, 3000, 3999]) assert.equal(shouldReconnect(code), true, `code ${code}`);
});

test('a client that cannot reach the edge retries with the delays it announces, then gives up after maxRetries', async () => {
  const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
  const backoff = { minDelayMs: 10, maxDelayMs: 40, factor: 2, jitter: 0.5 };
  const sock = new SwitchboardSocket(`ws://127.0.0.1:${port}/`, { WebSocket, backoff, maxRetries: 5 });
  const attempts = [];
  sock.onreconnecting = (ev) => attempts.push({ n: ev.attempt, delay: ev.delayMs, code: ev.code, at: Date.now() });
  assert.equal(sock.send('early'), true, 'queued before the first open');
  const closed = await new Promise((resolve) => sock.addEventListener('close', resolve));

  assert.deepEqual(attempts.map((a) => a.n), [1, 2, 3, 4, 5]);
  attempts.forEach((a, i) => {
    const d = Math.min(40, 10 * 2 ** i);
    assert.ok(a.delay >= d / 2 && a.delay <= d, `attempt ${a.n}: delay ${a.delay} outside [${d / 2}, ${d}]`);
    assert.equal(a.code, 1006);
    // Each attempt starts no sooner than announced (the next failure comes
    // after it); 2 ms for timers that fire on a rounded clock.
    if (i > 0) assert.ok(a.at - attempts[i - 1].at >= attempts[i - 1].delay - 2, `attempt ${a.n} came early`);
  });
  assert.equal(closed.code, 1006);
  assert.equal(closed.unsent, 1, 'the queued message is reported unsent');
  assert.equal(sock.readyState, SwitchboardSocket.CLOSED);
});

test('without a WebSocket to use (Node 18/20 and no option), the constructor says so', () => {
  const platform = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
  delete globalThis.WebSocket;
  try {
    assert.throws(() => new SwitchboardSocket('ws://127.0.0.1:1/'), /pass one as the WebSocket option/);
  } finally {
    if (platform) Object.defineProperty(globalThis, 'WebSocket', platform);
  }
});

test('an edge that accepts TCP but never answers the upgrade: each attempt is abandoned after connectTimeoutMs', async () => {
  const held = [];
  const silent = net.createServer((s) => held.push(s)); // reads nothing, answers nothing
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const urls = [];
  let n = 0;
  const sock = new SwitchboardSocket(() => {
    const u = `ws://127.0.0.1:${silent.address().port}/?attempt=${++n}`;
    urls.push(u);
    return u;
  }, { WebSocket, connectTimeoutMs: 100, maxRetries: 2, backoff: { minDelayMs: 10, maxDelayMs: 10 } });
  const codes = [];
  sock.onreconnecting = (ev) => codes.push(ev.code);
  const closed = await new Promise((resolve) => sock.addEventListener('close', resolve));
  assert.deepEqual(codes, [4901, 4901]);
  assert.equal(closed.code, 4901);
  assert.equal(urls.length, 3, 'the URL function is asked before every socket');
  assert.equal(sock.url, urls[2]);
  assert.equal(held.length, 3);
  for (const s of held) s.destroy();
  await new Promise((resolve) => silent.close(resolve));
});
