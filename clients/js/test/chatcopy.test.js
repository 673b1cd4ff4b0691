// The chat example embeds a copy of the built client (so that it builds
// without Node): it must be the build of the current source.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

test('examples/chat/web/switchboard-client.js is dist/index.js (make chat-client)', () => {
  const built = readFileSync(new URL('../dist/index.js', import.meta.url), 'utf8');
  const copy = readFileSync(new URL('../../../examples/chat/web/switchboard-client.js', import.meta.url), 'utf8');
  assert.ok(copy === built, 'the chat example\'s copy of the client is stale: run make chat-client');
});
