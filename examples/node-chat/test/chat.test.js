// The chat example as `npm start` runs it, against a real edge (with its
// embedded NATS server) and redis-server on free loopback ports: the four
// handlers in one switchboard-lambda process, the edge told the tutorial's
// routes (-routes sendmessage) so that other actions reach $default.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Child, connectWS, dumpLogs, eventually, startGateway, stopAll } from '../../../sdk/node-lambda/test/harness.js';

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const prefix = `sbchat${process.pid}`;
let gw;
let chat;

before(async () => {
  gw = await startGateway({ prefix, router: false, edgeArgs: ['-routes', 'sendmessage', '-connect-mode', 'required'] });
  const { scripts } = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8'));
  chat = new Child('npm start', 'sh', ['-c', `exec ${scripts.start}`], {
    cwd: dir,
    env: { ...process.env, SWITCHBOARD_NATS_URL: gw.natsURL, SWITCHBOARD_PREFIX: prefix, APIGW_ENDPOINT: `${gw.edgeAPI}/prod`, SWITCHBOARD_LAMBDA_LOG_LEVEL: 'debug' },
  });
  await chat.waitFor(/"msg":"serving"/);
});

after(stopAll);

test('the tutorial chat: connect, sendmessage to the others, $default, disconnect', { timeout: 90000 }, async () => {
  try {
    const [alice, bob, carol] = [await connectWS(gw.wsURL), await connectWS(gw.wsURL), await connectWS(gw.wsURL)];
    // $default (an action the edge does not route) answers with a hint and
    // the caller's connection, read with GetConnection.
    alice.send({ action: 'whoami' });
    const hint = (await alice.next()).data;
    assert.match(hint, /^Send \{"action":"sendmessage","message":"\.\.\."\} to chat\. You are [A-Za-z0-9_-]{16}, connected since \d{4}-\d\d-\d\dT.* from 127\.0\.0\.1\.$/);
    bob.send('not even JSON');
    assert.match((await bob.next()).data, /^Send /);

    alice.send({ action: 'sendmessage', message: 'hello, room' });
    assert.equal((await bob.next()).data, 'hello, room');
    assert.equal((await carol.next()).data, 'hello, room');

    // carol leaves: $disconnect removes her, so later messages are posted
    // to bob only and none of them meets a GoneException (410).
    await carol.close();
    await eventually('carol\'s $disconnect handled', () => /"msg":"invoked","route":"\$disconnect"/.test(chat.out));
    alice.send({ action: 'sendmessage', message: 'still there?' });
    assert.equal((await bob.next()).data, 'still there?');
    const posts = (await (await fetch(`${gw.edgeAdmin}/metrics`)).text())
      .split('\n').filter((l) => l.startsWith('switchboard_api_requests_total{') && l.includes('operation="post"'));
    assert.ok(posts.some((l) => l.includes('code="200"')), posts.join('\n'));
    assert.ok(!posts.some((l) => l.includes('code="410"')), posts.join('\n'));
    assert.equal(carol.inbox.length, 0);
    assert.equal(alice.inbox.length, 0, 'the sender gets no copy');
    await Promise.all([alice.close(), bob.close()]);
  } catch (err) {
    dumpLogs();
    throw err;
  }
});
