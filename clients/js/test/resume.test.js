// The client against a real edge (with its embedded NATS) and redis-server,
// through a TCP proxy that plays the network: a drop without a close frame
// resumes the same connection with every message posted meanwhile, once and
// in order; a drop longer than the edge's -resume-window gives
// recovered:false and a new connection; sends made while reconnecting go
// out after the resume; a black-holed socket is found dead by the heartbeat;
// the application's close codes end it for good.
//
// Node 18/20 have no global WebSocket: the tests pass the ws package's.
// The edge answers -app-ping "ping" with "pong" itself, which gives the
// tests an echo without a backend and an ordering barrier: once the pong
// of a ping sent now has arrived, everything the edge sent before it has.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { fork } from 'node:child_process';

import { startGateway, eventually, stopAll, dumpLogs } from '../../../sdk/node-lambda/test/harness.js';
import { NetworkProxy } from './proxy.js';
import { SwitchboardSocket, CODE_DEAD } from '../dist/index.js';

// Short enough for the recovered:false test to wait out; every resume
// below happens well within it (the proxy is back before the next attempt).
const resumeWindowMs = 4000;

/** @type {Awaited<ReturnType<typeof startGateway>>} */
let gw;
/** @type {NetworkProxy} */
let net;

before(async () => {
  gw = await startGateway({
    prefix: 'jsclient', router: false, moreEdges: 1,
    edgeArgs: ['-resume-window', `${resumeWindowMs}ms`, '-app-ping', 'ping', '-app-pong', 'pong'],
  });
  net = new NetworkProxy(Number(new URL(gw.wsURL).port));
  await net.start();
});

/** Every client made, closed at the end even when a test failed half-way. */
const clients = new Set();

after(async () => {
  for (const s of clients) s.close();
  await net?.close();
  await stopAll();
});

/** A client through the proxy, with everything it tells recorded. */
function connect(opts = {}) {
  net.up(); // whatever an earlier test left
  const sock = new SwitchboardSocket(`${net.url}/`, { WebSocket, backoff: { minDelayMs: 20, maxDelayMs: 200 }, ...opts });
  clients.add(sock);
  const rec = { sock, messages: /** @type {string[]} */ ([]), events: /** @type {Event[]} */ ([]) };
  for (const type of ['open', 'resumed', 'recovered', 'reconnecting', 'close']) sock.addEventListener(type, (ev) => rec.events.push(ev));
  sock.onmessage = (ev) => rec.messages.push(String(ev.data));
  return rec;
}

const of = (rec, type) => rec.events.filter((e) => e.type === type);

function until(what, cond) {
  return eventually(what, cond, 30000).catch((err) => {
    dumpLogs();
    throw err;
  });
}

async function opened(rec) {
  await until('open', () => of(rec, 'open').length === 1);
  return rec.sock.connectionId;
}

async function post(id, text) {
  const r = await fetch(`${gw.edgeAPI}/@connections/${id}`, { method: 'POST', body: text });
  assert.equal(r.status, 200, `POST ${text} to ${id}: ${r.status} ${await r.text()}`);
}

async function connectionInfo(id) {
  const r = await fetch(`${gw.edgeAPI}/@connections/${id}`);
  return r.status === 200 ? { status: 200, ...(await r.json()) } : { status: r.status };
}

/** Sends "ping" and waits for its pong: after it, the edge has nothing older in flight. */
async function barrier(rec) {
  const pongs = rec.messages.filter((m) => m === 'pong').length;
  assert.ok(rec.sock.send('ping'));
  await until('pong', () => rec.messages.filter((m) => m === 'pong').length > pongs);
}

const range = (from, to, p = 'm') => Array.from({ length: to - from + 1 }, (_, i) => `${p}${from + i}`);

test('a drop without a close frame resumes the same connection: every message posted while detached, once, in order', async () => {
  const c = connect();
  const id = await opened(c);
  assert.match(id, /^[A-Za-z0-9_-]{16}$/);
  assert.equal(c.sock.resumable, true);
  for (const m of range(1, 5)) await post(id, m);
  await until('first five', () => c.messages.length === 5);

  net.down();
  await until('the edge holds it detached', async () => (await connectionInfo(id)).detached === true);
  await until('the client saw it', () => c.sock.readyState === SwitchboardSocket.CONNECTING);
  for (const m of range(6, 25)) await post(id, m);
  await until('reconnect attempts while down', () => of(c, 'reconnecting').length >= 2);
  net.up();

  await until('resumed', () => of(c, 'resumed').length === 1);
  assert.equal(of(c, 'resumed')[0].connectionId, id);
  assert.equal(c.sock.connectionId, id);
  assert.equal(c.sock.readyState, SwitchboardSocket.OPEN);
  for (const m of range(26, 30)) await post(id, m);
  await barrier(c);

  assert.deepEqual(c.messages, [...range(1, 30), 'pong']);
  assert.equal(c.sock.received, 31);
  assert.equal(of(c, 'recovered').length, 0);
  assert.equal(of(c, 'reconnecting')[0].code, 1006);
  const info = await connectionInfo(id);
  assert.equal(info.status, 200);
  assert.ok(!info.detached, 'attached again');
  c.sock.close();
  await until('closed', () => of(c, 'close').length === 1);
});

test('a drop, then the network comes back through another edge: the same connection, every message once, in order', async () => {
  const c = connect();
  const id = await opened(c);
  for (const m of range(1, 3, 'x')) await post(id, m);
  await until('first three', () => c.messages.length === 3);

  net.down();
  await until('the edge holds it detached', async () => (await connectionInfo(id)).detached === true);
  for (const m of range(4, 6, 'x')) await post(id, m);
  const owner = net.targetPort;
  net.targetPort = gw.others[0].wsPort; // the load balancer picks the other edge now
  try {
    net.up();
    await until('resumed', () => of(c, 'resumed').length === 1);
    assert.equal(c.sock.connectionId, id);
    // Posted through the other edge's API, which finds the owner in the
    // registry: the connection still lives there.
    const r = await fetch(`${gw.others[0].edgeAPI}/@connections/${id}`, { method: 'POST', body: 'x7' });
    assert.equal(r.status, 200);
    await barrier(c); // the ping and its pong cross the relay
    assert.deepEqual(c.messages, [...range(1, 7, 'x'), 'pong']);
    assert.equal(of(c, 'recovered').length, 0);
    assert.equal(of(c, 'open').length, 1);
    const info = await connectionInfo(id);
    assert.equal(info.status, 200);
    assert.ok(!info.detached, 'attached, through the relay');
  } finally {
    net.targetPort = owner;
  }
  c.sock.close();
  await until('closed', () => of(c, 'close').length === 1);
});

test('sends made while reconnecting are queued (bounded) and go out after the resume, after the replay', async () => {
  const c = connect({ maxQueuedMessages: 3 });
  const id = await opened(c);
  net.down();
  await until('detached', async () => (await connectionInfo(id)).detached === true);
  await post(id, 'while-away');
  for (let i = 0; i < 3; i++) assert.equal(c.sock.send('ping'), true, `queued send ${i}`);
  assert.equal(c.sock.send('ping'), false, 'a send past maxQueuedMessages is refused');
  assert.equal(c.sock.queued, 3);
  assert.ok(c.sock.bufferedAmount >= 12);
  net.up();

  await until('three pongs', () => c.messages.length === 4);
  assert.deepEqual(c.messages, ['while-away', 'pong', 'pong', 'pong']);
  assert.equal(of(c, 'resumed').length, 1);
  assert.equal(c.sock.queued, 0);
  c.sock.close();
  await until('closed', () => of(c, 'close').length === 1);
});

test('a black-holed socket is found dead by the heartbeat and resumed: what it swallowed is sent again', async () => {
  const c = connect({ heartbeat: { message: 'ping', pong: 'pong', intervalMs: 100, timeoutMs: 400 } });
  const id = await opened(c);
  for (const m of range(1, 3)) await post(id, m);
  await until('first three', () => c.messages.length === 3);

  net.blackhole(); // the edge keeps writing into a socket that delivers nothing
  for (const m of range(4, 10)) await post(id, m);
  await until('resumed', () => of(c, 'resumed').length >= 1);
  assert.equal(of(c, 'reconnecting')[0].code, CODE_DEAD);
  await until('all ten', () => c.messages.length === 10);
  assert.deepEqual(c.messages, range(1, 10), 'pongs are the heartbeat\'s: counted, not delivered');
  assert.equal(c.sock.connectionId, id);
  c.sock.close();
  await until('closed', () => of(c, 'close').length === 1);
});

test('a drop longer than the window gives recovered:false with its reason and a new connection', async () => {
  const c = connect();
  const id = await opened(c);
  await post(id, 'old');
  await until('old', () => c.messages.length === 1);

  net.down();
  await until('detached', async () => (await connectionInfo(id)).detached === true);
  await post(id, 'lost'); // accepted while detached, gone with the connection
  await until('the window ran out', async () => (await connectionInfo(id)).status === 410);
  net.up();

  await until('recovered event', () => of(c, 'recovered').length === 1);
  const ev = of(c, 'recovered')[0];
  assert.equal(ev.recovered, false);
  assert.equal(ev.reason, 'unknown');
  assert.equal(ev.previousConnectionId, id);
  assert.notEqual(ev.connectionId, id);
  assert.equal(c.sock.connectionId, ev.connectionId);
  assert.equal(c.sock.received, 0);
  assert.equal(of(c, 'resumed').length, 0);
  assert.equal(of(c, 'open').length, 1, 'open is told once, like WebSocket');

  await post(c.sock.connectionId, 'fresh');
  await barrier(c);
  assert.deepEqual(c.messages, ['old', 'fresh', 'pong']);
  c.sock.close();
  await until('closed', () => of(c, 'close').length === 1);
});

test('the application\'s close code ends the connection: no reconnect', async () => {
  const c = connect();
  const id = await opened(c);
  const r = await fetch(`${gw.edgeAPI}/@connections/${id}?code=4401&reason=token%20expired`, { method: 'DELETE' });
  assert.equal(r.status, 204);
  await until('close event', () => of(c, 'close').length === 1);
  const ev = of(c, 'close')[0];
  assert.equal(ev.code, 4401);
  assert.equal(ev.reason, 'token expired');
  assert.equal(of(c, 'reconnecting').length, 0);
  assert.equal(c.sock.readyState, SwitchboardSocket.CLOSED);
  assert.equal(c.sock.send('late'), false);
});

test('close() ends the connection at the edge at once, with no detach', async () => {
  const c = connect();
  const id = await opened(c);
  c.sock.close(1000, 'bye');
  assert.equal(c.sock.readyState, SwitchboardSocket.CLOSING);
  await until('close event', () => of(c, 'close').length === 1);
  assert.equal(of(c, 'close')[0].code, 1000);
  assert.equal(of(c, 'close')[0].wasClean, true);
  await until('gone at the edge', async () => (await connectionInfo(id)).status === 410);
  assert.equal(of(c, 'reconnecting').length, 0);
});

test('binary messages arrive as binaryType says and are counted like text', async () => {
  const c = connect();
  c.sock.binaryType = 'arraybuffer';
  const got = [];
  c.sock.addEventListener('message', (ev) => got.push(ev.data));
  const id = await opened(c);
  const r = await fetch(`${gw.edgeAPI}/@connections/${id}`, {
    method: 'POST', headers: { 'X-Switchboard-Frame': 'binary' }, body: new Uint8Array([1, 2, 3]),
  });
  assert.equal(r.status, 200);
  await until('binary message', () => got.length === 1);
  assert.ok(got[0] instanceof ArrayBuffer);
  assert.deepEqual([...new Uint8Array(got[0])], [1, 2, 3]);
  assert.equal(c.sock.received, 1);
  c.sock.close();
  await until('closed', () => of(c, 'close').length === 1);
});

test('on the platform\'s WebSocket (no WebSocket option: Node 22\'s global, Node 20\'s behind a flag) a drop resumes too', async () => {
  net.up();
  const child = fork(new URL('./fixtures/platform-client.js', import.meta.url), [`${net.url}/`], {
    execArgv: process.versions.node.split('.')[0] < 22 ? ['--experimental-websocket'] : [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const told = [];
  child.on('message', (m) => told.push(m));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    const open = await until('open', () => told.find((m) => m.type === 'open'));
    const id = open.connectionId;
    await post(id, 'm1');
    await until('m1', () => told.some((m) => m.type === 'message'));
    net.down();
    await until('detached', async () => (await connectionInfo(id)).detached === true);
    for (const m of range(2, 5)) await post(id, m);
    net.up();
    const resumed = await until('resumed', () => told.find((m) => m.type === 'resumed')).catch((err) => {
      throw new Error(`${err.message}; the client told ${JSON.stringify(told)}`);
    });
    assert.equal(resumed.connectionId, id);
    await until('all five', () => told.filter((m) => m.type === 'message').length === 5);
    assert.deepEqual(told.filter((m) => m.type === 'message').map((m) => m.data), range(1, 5));
    assert.equal(told.filter((m) => m.type === 'recovered').length, 0);
    child.send('close');
    await until('closed', () => told.some((m) => m.type === 'close'));
  } finally {
    child.kill();
    await exited;
  }
});
