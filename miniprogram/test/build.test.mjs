// The CommonJS build and the example's copy are generated from miniauth.js: a stale
// one would ship a different module than the one tested.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'node:test';

import { build, toCommonJs } from '../build.mjs';
import * as esm from '../miniauth.js';

const require = createRequire(import.meta.url);
const read = (path) => readFileSync(new URL(path, import.meta.url), 'utf8');

test('miniauth.cjs is the build of miniauth.js (run `node miniprogram/build.mjs`)', () => {
  assert.equal(read('../miniauth.cjs'), build().cjs);
});

test('the example carries the same module (run `node miniprogram/build.mjs`)', () => {
  assert.equal(read('../example/miniauth.js'), read('../miniauth.js'));
});

test('the CommonJS build exports what the ES module exports', () => {
  const cjs = require('../miniauth.cjs');
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  assert.equal(typeof cjs.createMiniAuth, 'function');
  assert.equal(cjs.default, cjs.createMiniAuth);
  const error = new cjs.MiniAuthError('ticket_expired', 'the ticket has expired', 401);
  assert.deepEqual([error.code, error.status, error.needsLogin, error instanceof Error], ['ticket_expired', 401, true, true]);
  const wx = { getStorageSync: () => '', setStorageSync() {}, removeStorageSync() {} };
  const auth = cjs.createMiniAuth({ baseUrl: 'https://auth.example.com/', appid: 'wxd000000000000001', wx });
  assert.deepEqual(Object.keys(auth).sort(), [
    'bindWithPassword', 'getTokens', 'login', 'logout', 'request', 'submitPhone', 'submitProfile', 'unbind',
  ]);
});

test('the build refuses module syntax it does not convert', () => {
  assert.throws(() => toCommonJs("import x from './x.js';\nexport function f() {}\n"), /does not convert/);
});
