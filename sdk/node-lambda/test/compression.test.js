// permessage-deflate (RFC 7692) against a real edge started with
// -compression, with node's `ws` as the client: it offers the extension by
// default (perMessageDeflate) and compresses what it sends. The backend is
// the Lambda runner with the test handler (fixtures/app.mjs): its two-way
// `echo` route answers through the edge, so every round trip is client →
// edge (inflate) → NATS → handler → edge (compress) → client. What went
// compressed on the wire is read from the edge's own metrics.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import WebSocket from 'ws';

import { Client, dumpLogs, pkgDir, startGateway, startRunner, stopAll } from './harness.js';

const prefix = `sbzip${process.pid}`;
const maxMessage = 64 * 1024;
let gw;

before(async () => {
  gw = await startGateway({
    prefix,
    router: false,
    edgeArgs: ['-compression', '-compression-min-bytes', '256', '-max-message-bytes', String(maxMessage),
      '-two-way-routes', 'echo,whoami'],
  });
  await startRunner(['--nats', gw.natsURL, '--prefix', prefix, '--handler', path.join('test', 'fixtures', 'app.handler'),
    '--routes', '$connect,$disconnect,$default,echo,whoami'],
  { cwd: pkgDir, env: { OBSERVE_NATS: gw.natsURL, OBSERVE_SUBJECT: `${prefix}-observe` } });
});

after(stopAll);

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

/** Opens a client; perMessageDeflate false offers no compression. */
function open(perMessageDeflate = true) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${gw.wsURL}/`, { perMessageDeflate });
    let answer = '';
    ws.once('upgrade', (res) => (answer = res.headers['sec-websocket-extensions'] ?? ''));
    ws.once('open', () => resolve(Object.assign(new Client(ws), { answer })));
    ws.once('error', reject);
  });
}

async function whoami(c) {
  return (await c.call({ action: 'whoami' })).connectionId;
}

/** The edge's compression counters: {out: {plain, compressed}, in: {...}}. */
async function compression() {
  const text = await (await fetch(`${gw.edgeAdmin}/metrics`)).text();
  const v = (name, dir) => Number(text.match(new RegExp(`^${name}\\{direction="${dir}"\\} (\\S+)$`, 'm'))?.[1] ?? NaN);
  const of = (dir) => ({
    plain: v('switchboard_compression_plain_bytes_total', dir),
    compressed: v('switchboard_compression_compressed_bytes_total', dir),
  });
  return { out: of('out'), in: of('in') };
}

const delta = (a, b) => ({ plain: b.plain - a.plain, compressed: b.compressed - a.compressed });

/** A JSON document of about n bytes. */
function doc(n) {
  const items = [];
  for (let i = 0; JSON.stringify(items).length < n; i++) items.push({ id: i, user: 'alice', text: 'hello, world', seen: i % 2 === 0 });
  return items;
}

describe('permessage-deflate with node ws', () => {
  it('is negotiated with no context takeover either way', async () => {
    const c = await open();
    assert.equal(c.ws.extensions, 'permessage-deflate', 'the client took the extension');
    assert.match(c.answer, /^permessage-deflate\b/);
    assert.match(c.answer, /server_no_context_takeover/);
    assert.match(c.answer, /client_no_context_takeover/);
    const plain = await open(false);
    assert.equal(plain.ws.extensions, '');
    assert.equal(plain.answer, '');
    await Promise.all([c.close(), plain.close()]);
  });

  it('round trips both ways compressed; small replies go plain', async () => {
    const c = await open();
    const data = doc(8 * 1024);
    const before = await compression();
    const r = await c.call({ action: 'echo', data });
    assert.deepEqual(r.echo, data);
    const d = await compression();
    const sent = JSON.stringify({ action: 'echo', data }).length;
    const din = delta(before.in, d.in);
    const dout = delta(before.out, d.out);
    assert.equal(din.plain, sent, 'the edge inflated exactly what the client sent');
    assert.ok(din.compressed > 0 && din.compressed < sent / 3, `client's message came compressed: ${din.compressed} of ${sent} bytes`);
    assert.ok(dout.plain > sent && dout.compressed < dout.plain / 3, `the reply went compressed: ${dout.compressed} of ${dout.plain} bytes`);

    const small = await c.call({ action: 'echo', data: 'hi' });
    assert.equal(small.echo, 'hi');
    const after = await compression();
    assert.equal(after.out.plain, d.out.plain, 'a reply under -compression-min-bytes was not compressed');
    await c.close();
  });

  it('a fragmented compressed message is reassembled and inflated', async () => {
    const c = await open();
    await whoami(c);
    const text = JSON.stringify({ action: 'echo', data: doc(12 * 1024) });
    const cut = [0, 4000, 9000, text.length];
    for (let i = 0; i < 3; i++) {
      c.ws.send(text.slice(cut[i], cut[i + 1]), { compress: true, fin: i === 2 });
    }
    const r = await c.nextJSON();
    assert.deepEqual(r.echo, JSON.parse(text).data);
    await c.close();
  });

  it('a decompression bomb is closed with 1009 and its neighbour is unharmed', async () => {
    const neighbour = await open();
    const bomber = await open();
    // 16 MiB of spaces in a JSON string deflate to about 16 KiB: under the
    // frame limit, far over -max-message-bytes once inflated.
    const before = await compression();
    bomber.ws.send(`{"action":"echo","data":"${' '.repeat(16 * 1024 * 1024)}"}`, { compress: true });
    const closed = await bomber.closed;
    assert.equal(closed.code, 1009, `close ${closed.code} ${closed.reason}`);
    const d = await compression();
    assert.ok(d.in.plain - before.in.plain <= maxMessage + 1, `inflated ${d.in.plain - before.in.plain} bytes, want at most the limit`);

    const data = doc(4 * 1024);
    const r = await neighbour.call({ action: 'echo', data });
    assert.deepEqual(r.echo, data);
    await neighbour.close();
  });

  it('fan-out reaches compressed and plain members with identical payloads', async () => {
    const zipped = [await open(), await open()];
    const plain = [await open(false)];
    const all = [...zipped, ...plain];
    await Promise.all(all.map(whoami));
    const msg = JSON.stringify({ room: 'lobby', items: doc(2 * 1024) });
    const before = await compression();
    const res = await fetch(`${gw.edgeAPI}/prod/@broadcast`, { method: 'POST', body: msg });
    assert.equal(res.status, 200, await res.text());
    for (const c of all) {
      const f = await c.next();
      assert.equal(f.data, msg);
    }
    const d = delta(before.out, (await compression()).out);
    assert.equal(d.plain, msg.length, 'compressed once for both compressed members');
    assert.ok(d.compressed < msg.length / 3, `${d.compressed} compressed bytes`);
    await Promise.all(all.map((c) => c.close()));
  });
});
