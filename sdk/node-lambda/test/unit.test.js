// The runner's parts without a gateway: how handlers are loaded and
// invoked, how results become replies, the per-connection lanes, the flags.

import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';

import { parseConfig } from '../src/cli.js';
import { invoke } from '../src/invoke.js';
import { Lanes } from '../src/lanes.js';
import { loadHandler, parseHandler } from '../src/load.js';
import { connectReply, routeReply, routeToken, subjectFor } from '../src/protocol.js';
import { Runner } from '../src/runner.js';

const fixtures = path.join(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), 'fixtures');
const opts = { requestId: 'req-1', functionName: 'f', timeoutMs: 200 };
const text = (u8) => new TextDecoder().decode(u8);

describe('invoke', () => {
  test('an async handler settles with its promise', async () => {
    const out = await invoke(async (e, ctx) => ({ got: e.n, id: ctx.awsRequestId, left: ctx.getRemainingTimeInMillis() }), { n: 7 }, opts);
    assert.equal(out.ok, true);
    assert.equal(out.result.got, 7);
    assert.equal(out.result.id, 'req-1');
    assert.ok(out.result.left > 0 && out.result.left <= 200);
  });

  test('a callback handler settles with its callback, error or result', async () => {
    const ok = await invoke((e, ctx, cb) => setImmediate(() => cb(null, 'done')), {}, opts);
    assert.deepEqual(ok, { ok: true, result: 'done' });
    const bad = await invoke((e, ctx, cb) => cb('nope'), {}, opts);
    assert.equal(bad.ok, false);
    assert.equal(bad.error.message, 'nope');
  });

  test('context.succeed and context.fail settle it too', async () => {
    assert.deepEqual(await invoke((e, ctx, _cb) => ctx.succeed(1), {}, opts), { ok: true, result: 1 });
    assert.equal((await invoke((e, ctx, _cb) => ctx.fail(new Error('x')), {}, opts)).error.message, 'x');
  });

  test('a throw, a rejection and a rejection without a reason fail it', async () => {
    assert.equal((await invoke(() => { throw new Error('sync'); }, {}, opts)).error.message, 'sync');
    assert.equal((await invoke(async () => { throw new Error('async'); }, {}, opts)).error.message, 'async');
    const r = await invoke(() => Promise.reject(undefined), {}, opts);
    assert.equal(r.ok, false);
    assert.match(r.error.message, /without a reason/);
  });

  test('a handler that never settles times out; a late callback is ignored', async () => {
    let late;
    const out = await invoke((e, ctx, cb) => { late = cb; }, {}, { ...opts, timeoutMs: 50 });
    assert.equal(out.ok, false);
    assert.equal(out.timedOut, true);
    assert.equal(out.error.message, 'Task timed out after 0.05 seconds');
    late(null, 'too late'); // must not throw or resolve anything again
  });

  test('a two-parameter handler returning a value settles with it', async () => {
    assert.deepEqual(await invoke((e, ctx) => ({ statusCode: 200 }), {}, opts), { ok: true, result: { statusCode: 200 } });
  });
});

describe('loadHandler', () => {
  test('parses FILE.EXPORT as Lambda does', () => {
    assert.deepEqual(parseHandler('index.handler'), { module: 'index', names: ['handler'] });
    assert.deepEqual(parseHandler('./src/app.handlers.connect'), { module: './src/app', names: ['handlers', 'connect'] });
    assert.deepEqual(parseHandler('../x.y'), { module: '../x', names: ['y'] });
    for (const bad of ['index', './index', 'index.', '.handler', 'a..b', 'dir.v1/index']) {
      assert.throws(() => parseHandler(bad), /want FILE\.EXPORT/, bad);
    }
  });

  test('loads ES modules and CommonJS, nested exports, relative to a root', async () => {
    assert.deepEqual((await invoke(await loadHandler('esm.handler', fixtures), { body: 'b' }, opts)).result, { statusCode: 200, body: 'b' });
    const cjs = await loadHandler('./cjs/index.handler', fixtures);
    const out = await invoke(cjs, {}, opts);
    assert.deepEqual(out.result, { statusCode: 200, body: 'cjs req-1' });
    const nested = await loadHandler('cjs/index.nested.connect', fixtures);
    assert.deepEqual((await invoke(nested, {}, opts)).result, { statusCode: 204 });
  });

  test('says what is missing', async () => {
    await assert.rejects(loadHandler('nofile.handler', fixtures), /no .*nofile\.js, \.mjs or \.cjs/);
    await assert.rejects(loadHandler('cjs/index.notAFunction', fixtures), /exports no function notAFunction/);
    await assert.rejects(loadHandler('cjs/index.missing', fixtures), /exports no function missing/);
  });
});

describe('protocol', () => {
  test('route keys map to subjects as the edge maps them', () => {
    assert.deepEqual(subjectFor('sb', '$connect'), { subject: 'sb.connect', kind: 'connect' });
    assert.deepEqual(subjectFor('acme.ws', '$disconnect'), { subject: 'acme.ws.event.disconnect', kind: 'event' });
    assert.deepEqual(subjectFor('sb', '$resume'), { subject: 'sb.event.resume', kind: 'event' });
    assert.deepEqual(subjectFor('sb', '$default'), { subject: 'sb.route._default', kind: 'route' });
    assert.deepEqual(subjectFor('sb', 'chat/join'), { subject: 'sb.route.chat/join', kind: 'route' });
    assert.deepEqual(subjectFor('sb', '*'), { subject: 'sb.route.>', kind: 'route' });
    for (const bad of ['', 'a.b', 'a b', '$custom', '_default', 'x>', 'é', 'a"b', 'x'.repeat(129)]) {
      assert.equal(routeToken(bad), '', bad);
      assert.throws(() => subjectFor('sb', bad), /not one the gateway routes to/, bad);
    }
    assert.equal(routeToken('x'.repeat(128)), 'x'.repeat(128));
  });

  test('the $connect reply is the handler result as JSON; nothing allows', () => {
    assert.equal(text(connectReply(undefined)), '');
    assert.equal(text(connectReply(null)), '');
    assert.equal(text(connectReply({ statusCode: 401, headers: { 'X-A': 'b' } })), '{"statusCode":401,"headers":{"X-A":"b"}}');
    const circular = {};
    circular.self = circular;
    assert.throws(() => connectReply(circular));
    assert.throws(() => connectReply(() => {}), /cannot be serialized/);
  });

  test('a two-way reply is the body of a 2xx proxy response', () => {
    assert.deepEqual(routeReply(undefined), { body: new Uint8Array(0), binary: false });
    assert.equal(text(routeReply({ statusCode: 200, body: 'hi' }).body), 'hi');
    assert.equal(text(routeReply({ body: 'no status' }).body), 'no status');
    assert.deepEqual(routeReply({ statusCode: 200, body: 'AAH/', isBase64Encoded: true }), { body: new Uint8Array([0, 1, 255]), binary: true });
    for (const [bad, why] of [
      [{ statusCode: 500, body: 'x' }, /status 500/],
      [{ statusCode: 302 }, /status 302/],
      [{ statusCode: '200' }, /not an integer/],
      [{ body: { a: 1 } }, /body must be a string/],
      [{ body: 'x', isBase64Encoded: 'yes' }, /must be a boolean/],
      [{ body: 'not base64!', isBase64Encoded: true }, /not base64/],
      ['a string', /not a proxy response/],
      [[1, 2], /an array/],
    ]) {
      assert.throws(() => routeReply(bad), why, JSON.stringify(bad));
    }
  });
});

describe('Lanes', () => {
  const tick = () => new Promise((r) => setImmediate(r));

  test('keeps each key in order, runs keys side by side up to the bound', async () => {
    const lanes = new Lanes(2, 100);
    const log = [];
    const gates = {};
    const task = (name) => () => new Promise((resolve) => { log.push(`start ${name}`); gates[name] = () => { log.push(`end ${name}`); resolve(); }; });
    lanes.push('a', task('a1'));
    lanes.push('a', task('a2'));
    lanes.push('b', task('b1'));
    lanes.push('c', task('c1'));
    await tick();
    assert.deepEqual(log, ['start a1', 'start b1']); // a2 waits for a1, c1 for a free slot
    gates.b1();
    await tick();
    assert.deepEqual(log.slice(2), ['end b1', 'start c1']);
    gates.a1();
    await tick();
    assert.deepEqual(log.slice(4), ['end a1', 'start a2']); // a's next task, in a's order
    gates.c1();
    await tick();
    assert.deepEqual(log.slice(6), ['end c1']);
    const idle = lanes.idle();
    gates.a2();
    await idle;
    assert.equal(lanes.pending, 0);
    assert.equal(lanes.lanes.size, 0);
  });

  test('refuses beyond maxPending', async () => {
    const lanes = new Lanes(1, 2);
    let release;
    const block = new Promise((r) => (release = r));
    assert.equal(lanes.push('a', () => block), true);
    assert.equal(lanes.push('b', async () => {}), true);
    assert.equal(lanes.push('c', async () => {}), false);
    release();
    await lanes.idle();
    assert.equal(lanes.push('c', async () => {}), true);
    await lanes.idle();
  });
});

describe('configuration', () => {
  const fakeNC = /** @type {any} */ ({});
  const fn = async () => {};

  test('flags and their defaults', () => {
    const c = parseConfig(['--handler', './index.handler', '--routes', '$connect, sendmessage ,$default'], {});
    assert.deepEqual(c.functions, [{ spec: './index.handler', routes: ['$connect', 'sendmessage', '$default'] }]);
    assert.deepEqual(c.servers, ['nats://127.0.0.1:4223']);
    assert.equal(c.prefix, 'switchboard');
    assert.equal(c.timeoutMs, 3000);
    const d = parseConfig(['--handler', 'index.handler', '--timeout', '0.5'], { SWITCHBOARD_NATS_URL: 'nats://a:1,nats://b:2', SWITCHBOARD_PREFIX: 'acme.ws' });
    assert.deepEqual(d.functions[0].routes, ['$connect', '$disconnect', '*']);
    assert.deepEqual(d.servers, ['nats://a:1', 'nats://b:2']);
    assert.equal(d.prefix, 'acme.ws');
    assert.equal(d.timeoutMs, 500);
    const e = parseConfig(['--route', '$connect=connect.handler', '--route', 'sendmessage=./send.handler'], {});
    assert.deepEqual(e.functions, [{ spec: 'connect.handler', routes: ['$connect'] }, { spec: './send.handler', routes: ['sendmessage'] }]);
  });

  test('bad flags are refused with the reason', () => {
    for (const [argv, why] of [
      [[], /give --handler or --route/],
      [['--routes', 'a'], /--routes needs --handler/],
      [['--handler', 'i.h', '--routes', ','], /--routes is empty/],
      [['--route', 'sendmessage'], /want KEY=FILE.EXPORT/],
      [['--handler', 'i.h', '--timeout', '0'], /--timeout "0"/],
      [['--handler', 'i.h', '--concurrency', '1.5'], /--concurrency/],
      [['--handler', 'i.h', '--bogus'], /bogus/],
    ]) {
      assert.throws(() => parseConfig(argv, {}), why, argv.join(' '));
    }
  });

  test('the runner refuses routes that overlap or cannot be routed', () => {
    assert.throws(() => new Runner(fakeNC, { functions: [{ routes: ['a', 'a'], handler: fn }] }), /two handlers/);
    assert.throws(() => new Runner(fakeNC, { functions: [{ routes: ['*'], handler: fn }, { routes: ['$default'], handler: fn }] }), /already covers/);
    assert.throws(() => new Runner(fakeNC, { functions: [{ routes: ['a.b'], handler: fn }] }), /not one the gateway routes to/);
    assert.throws(() => new Runner(fakeNC, { functions: [] }), /no routes/);
    assert.throws(() => new Runner(fakeNC, { prefix: 'a.>', functions: [{ routes: ['a'], handler: fn }] }), /prefix/);
    assert.throws(() => new Runner(fakeNC, { queue: 'a b', functions: [{ routes: ['a'], handler: fn }] }), /queue/);
    assert.deepEqual(new Runner(fakeNC, { prefix: 'p', functions: [{ routes: ['$connect', '*'], handler: fn }] }).subjects(), ['p.connect', 'p.route.>']);
    // "*" is every message route, never RESUME events: "$resume" is asked for by name, and may go with "*".
    assert.deepEqual(new Runner(fakeNC, { prefix: 'p', functions: [{ routes: ['*', '$resume'], handler: fn }] }).subjects(), ['p.route.>', 'p.event.resume']);
  });
});
