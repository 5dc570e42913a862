// Access tokens that really expire: a miniauth whose access tokens live one second.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { createMiniAuth } from '../miniauth.js';
import { APPID, FakeWx, callApi, createWeChatUser, startService } from '../test-support/harness.mjs';

// miniauth accepts an access token for 5 s of clock leeway after its expiry; with
// second-granular `exp` it is refused at the latest 7 s after it was issued.
const SERVER_EXPIRY_MS = 7000;

let service;
let devices;

before(async () => {
  service = await startService({ tokens: { access_ttl_secs: 1 } });
  // One wait for every test: log all devices in, then let their tokens expire.
  devices = await Promise.all([loggedIn(), loggedIn(), loggedIn()]);
  for (const { wx, auth } of [devices[0], devices[2]]) {
    // The device clock runs behind: it believes the token still has minutes to live.
    wx.setStorageSync(`miniauth:${APPID}:tokens`, { ...auth.getTokens(), expires_at: Date.now() + 600_000 });
  }
  await sleep(SERVER_EXPIRY_MS);
});

after(async () => {
  if (service) await service.stop();
});

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function loggedIn() {
  const wx = new FakeWx(service, await createWeChatUser(service));
  const auth = createMiniAuth({ baseUrl: service.baseUrl, appid: APPID, wx });
  await auth.login();
  await auth.submitPhone(await wx.phoneCodeEvent());
  wx.requests.length = 0;
  return { wx, auth };
}

test('an access token the server finds expired is refreshed on its 401 and the call retried', async () => {
  const { wx, auth } = devices[0];
  const tokens = auth.getTokens();

  const response = await auth.request({ url: '/v1/me' });
  assert.equal(response.statusCode, 200);
  assert.deepEqual(wx.calls(), ['GET /v1/me', 'POST /v1/token', 'GET /v1/me']);
  assert.notEqual(auth.getTokens().access_token, tokens.access_token);
});

test('an access token known to be expired is refreshed before the call', async () => {
  const { wx, auth } = devices[1];
  const response = await auth.request({ url: '/v1/me', method: 'GET' });
  assert.equal(response.statusCode, 200);
  assert.deepEqual(wx.calls(), ['POST /v1/token', 'GET /v1/me']);
});

test('logout after expiry still revokes the refresh token', async () => {
  const { wx, auth } = devices[2];
  const refresh = auth.getTokens().refresh_token;
  await auth.logout();
  assert.deepEqual(wx.calls(), ['POST /v1/logout', 'POST /v1/token', 'POST /v1/logout']);
  assert.equal(auth.getTokens(), null);
  const refused = await callApi(service, '/v1/token', { grant_type: 'refresh_token', refresh_token: refresh });
  assert.equal(refused.status, 401, 'the refresh token of the logged-out session is revoked');
});
