// switchboard-lambda against a real gateway: an edge (with its embedded
// NATS server), a router whose @connections API serves TLS and checks SigV4,
// and redis-server, all on free loopback ports. The handler
// (fixtures/app.mjs) is written as for AWS and calls the real
// @aws-sdk/client-apigatewaymanagementapi at the endpoint it builds from
// the event, https://${domainName}/${stage}: the edge is told the router's
// address as -domain-name.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { connect } from 'nats';

import { connectWS, dumpLogs, eventually, makeCert, pkgDir, startGateway, startRunner, stopAll } from './harness.js';

const prefix = `sbnode${process.pid}`;
const accessKey = 'AKIDSWITCHBOARDTEST';
const secretKey = 'c2VjcmV0LWZvci10ZXN0cy1vbmx5';
const twoWay = 'whoami,echo,info,fail,status500,slow,binary,drainme';
// The routes of the main runner; drainme has a runner of its own.
const routes = '$connect,$disconnect,$resume,$default,sendmessage,kick,badkey,' + twoWay.replace(',drainme', '');

let gw;
let nc;
let tls;
/** @type {any[]} everything the handler reported */
const seen = [];
let runnerArgs;
let runnerEnv;

before(async () => {
  tls = makeCert();
  gw = await startGateway({
    prefix,
    edgeArgsFor: ({ routerAPI }) => ['-domain-name', `127.0.0.1:${routerAPI}`, '-stage', 'prod'],
    edgeArgs: ['-connect-mode', 'required', '-connect-timeout', '15s', '-two-way-routes', twoWay, '-route-timeout', '20s'],
    routerArgs: ['-tls-cert', tls.cert, '-tls-key', tls.key, '-api-access-keys', `${accessKey}:${secretKey}`],
  });
  nc = await connect({ servers: gw.natsURL });
  nc.subscribe(`${prefix}-observe`, { callback: (_err, m) => seen.push(JSON.parse(m.string())) });
  await nc.flush();
  runnerArgs = ['--nats', gw.natsURL, '--prefix', prefix, '--handler', path.join('test', 'fixtures', 'app.handler'), '--timeout', '2'];
  const serving = ['--routes', routes];
  runnerEnv = {
    OBSERVE_NATS: gw.natsURL,
    OBSERVE_SUBJECT: `${prefix}-observe`,
    // What the handler's SDK needs for Switchboard: the keys the gateway
    // was given (-api-access-keys) and a CA that trusts the API's certificate.
    AWS_ACCESS_KEY_ID: accessKey,
    AWS_SECRET_ACCESS_KEY: secretKey,
    AWS_REGION: 'eu-west-1',
    NODE_EXTRA_CA_CERTS: tls.cert,
  };
  await startRunner([...runnerArgs, ...serving], { env: runnerEnv, cwd: pkgDir, name: 'runner-a' });
});

after(async () => {
  await nc?.close();
  await stopAll();
});

/** A test that prints the children's logs when it fails. */
function it(name, fn) {
  test(name, { timeout: 90000 }, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      dumpLogs();
      throw err;
    }
  });
}

const url = (q = '') => `${gw.wsURL}/chat${q}`;

async function client(q) {
  const c = await connectWS(url(q));
  const me = await c.call({ action: 'whoami' });
  c.id = me.connectionId;
  return c;
}

function observed(pred) {
  return seen.filter(pred);
}

describe('$connect', () => {
  it('an allowing handler lets the client in, and its principal reaches later events', async () => {
    const c = await client('?test=alice');
    const me = await c.call({ action: 'whoami' });
    assert.match(me.connectionId, /^[A-Za-z0-9_-]{16}$/);
    assert.equal(me.authorizer.principalId, 'user-alice');
    assert.equal(me.authorizer.plan, 'pro');
    assert.equal(me.domainName, `127.0.0.1:${gw.routerAPIPort}`);
    assert.equal(me.stage, 'prod');
    await c.close();
  });

  for (const [q, status] of [['deny401', 401], ['deny403', 403], ['throw', 500], ['hang', 500]]) {
    it(`?test=${q} gets HTTP ${status}`, async () => {
      const err = await connectWS(url(`?test=${q}`)).then(
        (c) => (c.close(), assert.fail('connection accepted')),
        (e) => e,
      );
      assert.equal(err.status, status, err.message);
      if (q === 'deny401') assert.equal(err.body, 'missing token');
    });
  }
});

describe('routes', () => {
  it('a message route posts to another connection through the AWS SDK', async () => {
    const [a, b] = [await client(), await client()];
    a.send({ action: 'sendmessage', to: b.id, data: 'hello from a' });
    const f = await b.next();
    assert.equal(f.data, 'hello from a');
    assert.equal(f.binary, false);
    await Promise.all([a.close(), b.close()]);
  });

  it('a two-way route sends the handler body back; awsRequestId is the event ID', async () => {
    const c = await client();
    const r = await c.call({ action: 'echo', data: 'ping' });
    assert.equal(r.echo, 'ping');
    assert.match(r.awsRequestId, /^[A-Za-z0-9]{22}$/);
    assert.equal(r.awsRequestId, r.requestId);
    const info = await c.call({ action: 'info' });
    assert.ok(Math.abs(Date.parse(info.connectedAt) - Date.now()) < 60000, info.connectedAt);
    assert.equal(info.sourceIp, '127.0.0.1');
    c.send({ action: 'binary' });
    const bin = await c.next();
    assert.equal(bin.binary, true);
    assert.deepEqual([...bin.data], [0, 1, 2, 255]);
    await c.close();
  });

  for (const action of ['fail', 'status500', 'slow']) {
    it(`a two-way route whose handler ${action === 'slow' ? 'times out' : 'fails'} (${action}) gets the error frame`, async () => {
      const c = await client();
      const start = Date.now();
      const r = await c.call({ action }, 15000);
      assert.equal(r.message, 'Internal server error');
      assert.equal(r.connectionId, c.id);
      // The runner answered (its --timeout is 2 s), not the edge's 20 s route timeout.
      assert.ok(Date.now() - start < 15000);
      await c.close();
    });
  }

  it('a closed connection is GoneException to the SDK in the handler', async () => {
    const [a, gone] = [await client(), await client()];
    await gone.close();
    await eventually('$disconnect of the closed connection', () => observed((o) => o.routeKey === '$disconnect' && o.connectionId === gone.id).length === 1);
    a.send({ action: 'sendmessage', to: gone.id, data: 'anyone?' });
    const [o] = await eventually('the post failed', () => {
      const r = observed((x) => x.postError && x.to === gone.id);
      return r.length ? r : false;
    });
    assert.deepEqual({ name: o.postError, gone: o.gone, status: o.status }, { name: 'GoneException', gone: true, status: 410 });
    await a.close();
  });

  it('the API refuses an SDK signing with a key it was not given', async () => {
    const c = await client();
    c.send({ action: 'badkey' });
    const [o] = await eventually('the post failed', () => {
      const r = observed((x) => x.postError && x.to === c.id);
      return r.length ? r : false;
    });
    assert.deepEqual({ name: o.postError, status: o.status }, { name: 'ForbiddenException', status: 403 });
    await c.close();
  });
});

describe('$disconnect', () => {
  it('every connection gets exactly one, with its close code and its principal', async () => {
    const cs = await Promise.all(Array.from({ length: 6 }, (_, i) => client(`?test=d${i}`)));
    const kicked = cs.pop();
    await Promise.all(cs.map((c) => c.close(1000)));
    kicked.send({ action: 'kick' }); // DeleteConnection through the SDK
    const k = await kicked.closed;
    assert.equal(k.code, 1000);
    const ids = [...cs, kicked].map((c) => c.id);
    const count = (id) => observed((o) => o.routeKey === '$disconnect' && o.connectionId === id).length;
    await eventually('a $disconnect for each', () => ids.every((id) => count(id) >= 1));
    // A barrier: one more connection's $disconnect comes after any late duplicate of the ones above.
    const last = await client();
    await last.close();
    await eventually('the barrier $disconnect', () => count(last.id) === 1);
    for (const id of ids) assert.equal(count(id), 1, `$disconnect of ${id}`);
    const d = observed((o) => o.routeKey === '$disconnect' && o.connectionId === kicked.id)[0];
    assert.equal(d.eventType, 'DISCONNECT');
    assert.equal(d.disconnectStatusCode, 1000);
    assert.equal(d.disconnectReason, 'Connection Closed Normally');
    assert.equal(d.authorizer.principalId, 'user-d5');
  });
});

describe('$resume', () => {
  it('a resumed connection is one $resume invocation, never a second $connect or a $disconnect', async () => {
    const first = await connectWS(url('?test=r1&resume=1'));
    const s = await first.nextJSON();
    assert.equal(s.type, 'session');
    first.ws.terminate(); // the socket dies without a close handshake: the connection is detached
    await first.closed;
    const again = await connectWS(url(`?resume=${encodeURIComponent(s.token)}&received=0`));
    const r = await again.nextJSON();
    assert.deepEqual([r.connectionId, r.resumed, r.recovered], [s.connectionId, true, true]);
    const of = (key) => observed((o) => o.routeKey === key && o.connectionId === s.connectionId);
    await eventually('the $resume invocation', () => of('$resume').length === 1);
    const e = of('$resume')[0];
    assert.equal(e.eventType, 'RESUME');
    assert.equal(e.authorizer.principalId, 'user-r1');
    assert.ok(Number.isInteger(e.detachedMs) && e.detachedMs >= 0, `detachedMs ${e.detachedMs}`);
    await again.close(1000);
    await eventually('its one $disconnect', () => of('$disconnect').length === 1);
    assert.equal(of('$connect').length, 1);
    assert.equal(of('$resume').length, 1);
  });
});

describe('replicas', () => {
  it('two runners in one queue group share the load, each event handled once', async () => {
    const b = await startRunner([...runnerArgs, '--routes', routes], { env: runnerEnv, cwd: pkgDir, name: 'runner-b' });
    const cs = await Promise.all(Array.from({ length: 4 }, () => client()));
    const n = 15;
    const replies = await Promise.all(cs.map(async (c, ci) => {
      const out = [];
      for (let i = 0; i < n; i++) out.push(await c.call({ action: 'echo', data: `${ci}-${i}` }));
      return out;
    }));
    const flat = replies.flat();
    assert.deepEqual(flat.map((r) => r.echo).sort(), cs.flatMap((_, ci) => Array.from({ length: n }, (_, i) => `${ci}-${i}`)).sort());
    const pids = new Set(flat.map((r) => r.pid));
    assert.equal(pids.size, 2, `replies came from ${[...pids]}`);
    assert.ok(pids.has(b.proc.pid), `runner-b (${b.proc.pid}) answered none`);
    // Each echo event was invoked exactly once, across both replicas. The
    // handler reports on a NATS connection of its own, which may reach us
    // after its reply reached the client: wait for every report first.
    const reports = (r) => observed((o) => o.routeKey === 'echo' && o.requestId === r.requestId).length;
    await eventually('a report of every echo', () => flat.every((r) => reports(r) > 0));
    for (const r of flat) assert.equal(reports(r), 1, `echo ${r.requestId} handled ${reports(r)} times`);
    for (const c of cs) assert.equal(c.inbox.length, 0, 'no duplicate reply');
    await Promise.all(cs.map((c) => c.close()));
    b.signal('SIGTERM');
    assert.deepEqual(await b.exited, { code: 0, signal: null });
  });
});

describe('SIGTERM', () => {
  it('drains: the invocation in flight finishes and is answered, then the runner exits 0', async () => {
    const r = await startRunner([...runnerArgs, '--routes', 'drainme'], { env: runnerEnv, cwd: pkgDir, name: 'runner-drain' });
    const c = await client();
    c.send({ action: 'drainme', data: 'job-1' });
    await eventually('the handler started', () => observed((o) => o.started === 'job-1').length === 1);
    r.signal('SIGTERM');
    const reply = await c.nextJSON();
    assert.equal(reply.drained, 'job-1');
    assert.deepEqual(await r.exited, { code: 0, signal: null });
    assert.match(r.out, /"msg":"draining"/);
    // Nobody serves drainme any more: the edge answers the two-way route itself.
    const after = await c.call({ action: 'drainme', data: 'job-2' });
    assert.equal(after.message, 'Internal server error');
    await c.close();
  });
});
