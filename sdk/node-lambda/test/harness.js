// Test harness: a real Switchboard gateway (edge with embedded NATS,
// router, redis-server) on free loopback ports, switchboard-lambda
// runners as child processes, and WebSocket clients. Every child is killed
// when the test process ends, even when it is killed itself (setpriv's
// parent-death signal, where util-linux has it).

import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import WebSocket from 'ws';

export const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const repoRoot = path.resolve(pkgDir, '..', '..');
export const runnerBin = path.join(pkgDir, 'bin', 'switchboard-lambda.js');

/** Polls cond until it returns a truthy value or throws no more; fails after timeoutMs. */
export async function eventually(what, cond, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
      last = new Error('condition false');
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not true after ${timeoutMs} ms: ${last?.message ?? last}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A loopback TCP port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (s.address());
      s.close(() => resolve(port));
    });
  });
}

const hasSetpriv = spawnSync('setpriv', ['--help'], { stdio: 'ignore' }).status === 0;

/** A child process with its output kept for diagnostics. */
export class Child {
  constructor(name, cmd, args, { env, cwd } = {}) {
    this.name = name;
    this.out = '';
    const argv = hasSetpriv ? ['setpriv', ['--pdeathsig', 'KILL', '--', cmd, ...args]] : [cmd, args];
    this.proc = spawn(argv[0], argv[1], { env: env ?? process.env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (/** @type {Buffer} */ b) => {
      this.out += b.toString();
      if (this.out.length > 256 * 1024) this.out = this.out.slice(-128 * 1024);
    };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
    this.running = true;
    this.exited.then(() => (this.running = false));
    children.add(this);
  }

  /** Resolves once the output matches re. */
  waitFor(re, timeoutMs = 30000) {
    return eventually(`${this.name} printed ${re}`, () => {
      if (!this.running && !re.test(this.out)) throw new Error(`${this.name} exited:\n${this.tail()}`);
      return re.test(this.out);
    }, timeoutMs);
  }

  signal(sig) {
    if (this.running) this.proc.kill(sig);
  }

  async stop() {
    this.signal('SIGKILL');
    await this.exited;
    children.delete(this);
  }

  tail(n = 30) {
    return this.out.split('\n').slice(-n).join('\n');
  }
}

/** @type {Set<Child>} */
const children = new Set();
process.on('exit', () => {
  for (const c of children) c.signal('SIGKILL');
});

/** Kills every child still running. */
export async function stopAll() {
  await Promise.all([...children].map((c) => c.stop()));
}

/** The output of every child, for a failed test. */
export function dumpLogs() {
  for (const c of children) process.stderr.write(`--- ${c.name} (last lines) ---\n${c.tail(40)}\n`);
}

const tmpDirs = [];
process.on('exit', () => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

export function tempDir(prefix = 'switchboard-node-') {
  const d = mkdtempSync(path.join(os.tmpdir(), prefix));
  tmpDirs.push(d);
  return d;
}

/** The edge and router binaries: $SWITCHBOARD_BIN_DIR, or built once here. */
export function binaries() {
  let dir = process.env.SWITCHBOARD_BIN_DIR;
  if (!dir) {
    dir = tempDir('switchboard-node-bin-');
    execFileSync('go', ['build', '-o', dir + path.sep, './cmd/edge', './cmd/router'], { cwd: repoRoot, stdio: ['ignore', 'inherit', 'inherit'] });
  }
  for (const b of ['edge', 'router']) {
    if (!existsSync(path.join(dir, b))) throw new Error(`no ${b} binary in ${dir}`);
  }
  return { edge: path.join(dir, 'edge'), router: path.join(dir, 'router') };
}

/** The environment of a gateway process: the machine's SWITCHBOARD_* variables removed. */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SWITCHBOARD_')) env[k] = v;
  return { ...env, ...extra };
}

/** A self-signed certificate for 127.0.0.1, for the API's TLS. */
export function makeCert() {
  const dir = tempDir('switchboard-node-tls-');
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

async function tcpPing(port, send, expect) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.on('connect', () => s.write(send));
    s.on('data', (b) => {
      got += b.toString();
      if (got.includes(expect)) {
        s.destroy();
        resolve(true);
      }
    });
    s.on('error', () => resolve(false));
    s.setTimeout(2000, () => {
      s.destroy();
      resolve(false);
    });
  });
}

async function httpOK(url) {
  try {
    const r = await fetch(url);
    return r.status === 200;
  } catch {
    return false;
  }
}

/** Starts redis-server on a free port, without persistence. */
export async function startRedis() {
  const port = await freePort();
  const c = new Child('redis', 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
  await eventually('redis answers PING', () => tcpPing(port, 'PING\r\n', '+PONG'));
  return { child: c, url: `redis://127.0.0.1:${port}/0` };
}

/**
 * Starts a gateway: redis-server, one edge (running the embedded NATS
 * server) and, unless router is false, one router. The router's API may
 * serve TLS and require SigV4 keys.
 * @param {object} o
 * @param {string} o.prefix subject and Redis key prefix
 * @param {string[]} [o.edgeArgs] more edge flags
 * @param {boolean} [o.router]
 * @param {string[]} [o.routerArgs] more router flags
 * @param {(ports: {routerAPI: number}) => string[]} [o.edgeArgsFor] edge flags that need the router's port
 * @param {number} [o.moreEdges] edges besides the first, on its NATS server and Redis (others[])
 */
export async function startGateway(o) {
  const bins = binaries();
  const redis = await startRedis();
  const [ws, api, admin, nats, rAPI, rAdmin] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);
  const natsURL = `nats://127.0.0.1:${nats}`;
  const edge = new Child('edge', bins.edge, [
    '-listen', `127.0.0.1:${ws}`, '-api-listen', `127.0.0.1:${api}`, '-admin-listen', `127.0.0.1:${admin}`,
    '-nats-embedded-listen', `127.0.0.1:${nats}`, '-redis-url', redis.url,
    '-prefix', o.prefix, '-redis-key-prefix', o.prefix, '-node-id', `${o.prefix}-edge`,
    '-drain-delay', '0s', '-drain-window', '100ms', '-log-format', 'json',
    ...(o.edgeArgsFor ? o.edgeArgsFor({ routerAPI: rAPI }) : []), ...(o.edgeArgs ?? []),
  ], { env: cleanEnv() });
  await eventually('edge ready', () => { if (!edge.running) throw new Error(edge.tail()); return httpOK(`http://127.0.0.1:${admin}/readyz`); });
  let router;
  if (o.router !== false) {
    router = new Child('router', bins.router, [
      '-api-listen', `127.0.0.1:${rAPI}`, '-admin-listen', `127.0.0.1:${rAdmin}`, '-nats-url', natsURL,
      '-redis-url', redis.url, '-prefix', o.prefix, '-redis-key-prefix', o.prefix, '-log-format', 'json',
      ...(o.routerArgs ?? []),
    ], { env: cleanEnv() });
    await eventually('router ready', () => { if (!router.running) throw new Error(router.tail()); return httpOK(`http://127.0.0.1:${rAdmin}/readyz`); });
  }
  const others = [];
  for (let i = 1; i <= (o.moreEdges ?? 0); i++) {
    const [ows, oapi, oadmin] = await Promise.all([freePort(), freePort(), freePort()]);
    const other = new Child(`edge${i}`, bins.edge, [
      '-listen', `127.0.0.1:${ows}`, '-api-listen', `127.0.0.1:${oapi}`, '-admin-listen', `127.0.0.1:${oadmin}`,
      '-nats-url', natsURL, '-redis-url', redis.url,
      '-prefix', o.prefix, '-redis-key-prefix', o.prefix, '-node-id', `${o.prefix}-edge${i}`,
      '-drain-delay', '0s', '-drain-window', '100ms', '-log-format', 'json',
      ...(o.edgeArgsFor ? o.edgeArgsFor({ routerAPI: rAPI }) : []), ...(o.edgeArgs ?? []),
    ], { env: cleanEnv() });
    await eventually(`edge${i} ready`, () => { if (!other.running) throw new Error(other.tail()); return httpOK(`http://127.0.0.1:${oadmin}/readyz`); });
    others.push({ wsPort: ows, edgeAPI: `http://127.0.0.1:${oapi}`, edge: other });
  }
  return {
    natsURL,
    others,
    wsURL: `ws://127.0.0.1:${ws}`,
    edgeAPI: `http://127.0.0.1:${api}`,
    edgeAdmin: `http://127.0.0.1:${admin}`,
    routerAPIPort: rAPI,
    edge,
    router,
  };
}

/**
 * Starts a switchboard-lambda runner and waits until it serves.
 * @param {string[]} args
 * @param {object} [o]
 * @param {Record<string, string>} [o.env]
 * @param {string} [o.cwd]
 * @param {string} [o.name]
 */
export async function startRunner(args, o = {}) {
  const c = new Child(o.name ?? 'runner', process.execPath, [runnerBin, ...args], {
    env: { ...cleanEnv(), AWS_EC2_METADATA_DISABLED: 'true', ...o.env },
    cwd: o.cwd,
  });
  await c.waitFor(/"msg":"serving"/);
  return c;
}

/** A WebSocket client that queues what it receives. */
export class Client {
  /** @param {WebSocket} ws */
  constructor(ws) {
    this.ws = ws;
    /** @type {Array<{data: string | Buffer, binary: boolean}>} */
    this.inbox = [];
    /** @type {Array<() => void>} */
    this.wake = [];
    ws.on('message', (data, binary) => {
      this.inbox.push({ data: binary ? /** @type {Buffer} */ (data) : data.toString(), binary });
      for (const w of this.wake.splice(0)) w();
    });
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    this.closed.then(() => {
      for (const w of this.wake.splice(0)) w();
    });
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }

  /** The next frame received, within timeoutMs. */
  async next(timeoutMs = 20000) {
    const deadline = Date.now() + timeoutMs;
    while (this.inbox.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${timeoutMs} ms`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake.push(() => {
          clearTimeout(t);
          resolve(undefined);
        });
      });
    }
    return /** @type {{data: string | Buffer, binary: boolean}} */ (this.inbox.shift());
  }

  /** The next frame as JSON. */
  async nextJSON(timeoutMs) {
    const f = await this.next(timeoutMs);
    return JSON.parse(f.data.toString());
  }

  /** Sends obj on a two-way route and returns the reply as JSON. */
  async call(obj, timeoutMs) {
    this.send(obj);
    return this.nextJSON(timeoutMs);
  }

  close(code = 1000) {
    this.ws.close(code);
    return this.closed;
  }
}

/**
 * Opens a WebSocket; resolves with a Client, or rejects with an error whose
 * status is the HTTP status of a refused upgrade.
 * @param {string} url
 */
export function connectWS(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('open', () => resolve(new Client(ws)));
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (b) => (body += b));
      res.on('end', () => {
        const err = Object.assign(new Error(`upgrade refused: ${res.statusCode} ${body}`), { status: res.statusCode, body });
        req.destroy();
        reject(err);
      });
    });
    ws.once('error', (err) => reject(err));
  });
}
