// The module against a real miniauth and its WeChat simulator: every path of the flow.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { MiniAuthError, createMiniAuth } from '../miniauth.js';
import {
  APPID,
  FakeWx,
  callApi,
  createPasswordUser,
  createWeChatUser,
  postJson,
  startService,
  uniquePhone,
} from '../test-support/harness.mjs';

let service;

before(async () => {
  service = await startService();
});

after(async () => {
  if (service) await service.stop();
});

/** A phone running the mini program as a new WeChat user, and its module. */
async function device(options = {}) {
  const simUser = options.simUser || (await createWeChatUser(service, options));
  const wx = new FakeWx(service, simUser);
  const auth = createMiniAuth({ baseUrl: service.baseUrl, appid: APPID, wx });
  return { wx, auth, simUser };
}

async function me(auth) {
  const response = await auth.request({ url: '/v1/me' });
  assert.equal(response.statusCode, 200, JSON.stringify(response.data));
  return response.data;
}

async function rejectsWith(promise, code, status) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof MiniAuthError, `expected a MiniAuthError, got ${e}`);
    assert.equal(e.code, code, e.message);
    if (status !== undefined) assert.equal(e.status, status);
    return true;
  });
}

/** Registers a new WeChat user through the phone code flow. */
async function registered(options) {
  const d = await device(options);
  await d.auth.login();
  const outcome = await d.auth.submitPhone(await d.wx.phoneCodeEvent());
  return { ...d, outcome };
}

describe('a new user', () => {
  test('registers with the phone button code: login, profile, phone, then tokens', async () => {
    const { wx, auth } = await device({ nickname: 'Alice' });

    const session = await auth.login();
    assert.deepEqual(
      { bound: session.bound, tokens: session.tokens, hasProfile: session.hasProfile, hasPhone: session.hasPhone },
      { bound: false, tokens: null, hasProfile: false, hasPhone: false },
    );
    assert.deepEqual(wx.calls(), [`POST /v1/apps/${APPID}/sessions`]);

    const profile = await auth.submitProfile({ nickname: ' Alice ', avatarUrl: 'wxfile://tmp_avatar.png' });
    assert.deepEqual(profile, { nickname: 'Alice', avatarUrl: 'wxfile://tmp_avatar.png' });

    const outcome = await auth.submitPhone(await wx.phoneCodeEvent());
    assert.equal(outcome.registered, true);
    assert.equal(typeof outcome.userId, 'number');
    assert.equal(auth.getTokens().access_token, outcome.tokens.access_token);
    assert.equal(wx.getStorageSync(`miniauth:${APPID}:tokens`).refresh_token, outcome.tokens.refresh_token);

    const user = await me(auth);
    assert.equal(user.user_id, outcome.userId);
    assert.equal(user.nickname, 'Alice');
    assert.match(user.phone, /^139\*{4}\d{4}$/);
    assert.deepEqual(user.bindings.map((b) => b.appid), [APPID]);
  });

  test('registers with the legacy getUserInfo and encrypted phone payloads', async () => {
    const { wx, auth } = await device({ nickname: 'Legacy' });
    await auth.login();

    const profile = await auth.submitProfile({ type: 'getuserinfo', detail: await wx.userInfoDetail() });
    assert.equal(profile.nickname, 'Legacy');

    const outcome = await auth.submitPhone(await wx.legacyPhoneEvent());
    assert.equal(outcome.registered, true);
    assert.equal((await me(auth)).user_id, outcome.userId);
  });

  test('whose phone an administrator registered is bound to that user, not registered again', async () => {
    const phone = uniquePhone();
    const known = await createPasswordUser(service, { account: `known${phone}`, password: 'correct horse battery', mobile: phone });
    const { outcome } = await registered({ phone });
    assert.deepEqual({ registered: outcome.registered, userId: outcome.userId }, { registered: false, userId: known.user_id });
  });
});

describe('the session-key race', () => {
  test('wx.login is called once, before the ticket; never between the ticket and the payload', async () => {
    const { wx, auth } = await device();
    await auth.login();
    assert.equal(wx.logins, 1);
    const event = await wx.legacyPhoneEvent();

    // The page calls login() again meanwhile (onShow fires when the phone sheet closes):
    // the held ticket is reused while wx.checkSession says the session lives.
    const again = await auth.login();
    assert.equal(again.bound, false);
    await auth.submitProfile({ nickname: 'Racer', avatarUrl: 'https://example.com/r.png' });
    const outcome = await auth.submitPhone(event);

    assert.equal(outcome.registered, true);
    assert.equal(wx.logins, 1, 'wx.login must not run between the ticket and the payload');
    assert.deepEqual(wx.calls(), [
      `POST /v1/apps/${APPID}/sessions`,
      `POST /v1/apps/${APPID}/profile`,
      `POST /v1/apps/${APPID}/phone`,
    ]);
  });

  test('a fresh wx.login between the ticket and the payload is exactly what breaks the flow', async () => {
    // The control of the test above: a login that starts a new session (what a naive
    // module does on every call) rotates the key the payload was sealed under.
    const { wx, auth } = await device();
    await auth.login();
    const event = await wx.legacyPhoneEvent();
    await auth.login({ force: true });
    assert.equal(wx.logins, 2);
    await rejectsWith(auth.submitPhone(event), 'payload_rejected', 400);
  });

  test('a dead WeChat session makes login() start a new one', async () => {
    const { wx, auth } = await device();
    await auth.login();
    wx.sessionAlive = false;
    await auth.login();
    assert.equal(wx.logins, 2);
    assert.equal((await auth.submitPhone(await wx.phoneCodeEvent())).registered, true);
  });

  test('a ticket superseded by a login elsewhere asks for login() again', async () => {
    const first = await device();
    await first.auth.login();
    const second = await device({ simUser: first.simUser });
    await second.auth.login();
    const event = await first.wx.phoneCodeEvent();
    await assert.rejects(first.auth.submitPhone(event), (e) => {
      assert.equal(e.code, 'ticket_session_superseded');
      assert.equal(e.status, 401);
      assert.equal(e.needsLogin, true);
      return true;
    });
    await first.auth.login();
    assert.equal(first.wx.logins, 2, 'the refused ticket is dropped: login() starts a new session');
    assert.equal((await first.auth.submitPhone(await first.wx.phoneCodeEvent())).registered, true);
  });
});

describe('a returning user', () => {
  test('is logged in with one round trip on a new device, and with none on the same one', async () => {
    const { simUser, outcome } = await registered();

    const other = await device({ simUser });
    const session = await other.auth.login();
    assert.equal(session.bound, true);
    assert.equal(typeof session.tokens.access_token, 'string');
    assert.deepEqual(other.wx.calls(), [`POST /v1/apps/${APPID}/sessions`], 'exactly one request to miniauth');
    assert.equal((await me(other.auth)).user_id, outcome.userId);

    other.wx.requests.length = 0;
    const cached = await other.auth.login();
    assert.deepEqual([cached.bound, cached.hasProfile, cached.hasPhone], [true, session.hasProfile, true]);
    assert.deepEqual(other.wx.calls(), [], 'a cached token needs no request');
    assert.equal(other.wx.logins, 1, 'nor a wx.login');
  });
});

describe('a user who declines the phone', () => {
  test('gets phone_declined, then binds with account + password', async () => {
    const account = `bob${uniquePhone()}`;
    const bob = await createPasswordUser(service, { account, password: 'correct horse battery' });
    const { wx, auth, simUser } = await device({ phone: null });
    await auth.login();

    await rejectsWith(auth.submitPhone(wx.declinedPhoneEvent()), 'phone_declined', 0);
    await rejectsWith(auth.bindWithPassword(account, 'wrong password!'), 'invalid_credentials', 401);
    assert.equal(auth.getTokens(), null, 'a failed password login stores nothing');

    const bound = await auth.bindWithPassword(account, 'correct horse battery');
    assert.equal(bound.userId, bob.user_id);
    const user = await me(auth);
    assert.equal(user.account, account);
    assert.deepEqual(user.bindings.map((b) => b.appid), [APPID]);

    // The binding holds: the same WeChat user on another device is logged in at once.
    const later = await device({ simUser });
    assert.equal((await later.auth.login()).bound, true);
    assert.equal((await me(later.auth)).user_id, bob.user_id);
  });

  test('binding an account that already has a WeChat identity in this app is refused, no login kept', async () => {
    const account = `carol${uniquePhone()}`;
    await createPasswordUser(service, { account, password: 'correct horse battery' });
    const first = await device({ phone: null });
    await first.auth.login();
    await first.auth.bindWithPassword(account, 'correct horse battery');

    const second = await device({ phone: null });
    await second.auth.login();
    await rejectsWith(second.auth.bindWithPassword(account, 'correct horse battery'), 'user_already_bound_in_app', 409);
    assert.equal(second.auth.getTokens(), null);
  });
});

describe('unbind', () => {
  test('removes this app binding and logs out; the next login is unbound', async () => {
    const { wx, auth, simUser } = await registered();
    const refresh = auth.getTokens().refresh_token;

    await auth.unbind();
    assert.equal(auth.getTokens(), null);
    assert.equal(wx.calls().filter((c) => c === `DELETE /v1/apps/${APPID}/binding`).length, 1);
    const refused = await callApi(service, '/v1/token', { grant_type: 'refresh_token', refresh_token: refresh });
    assert.equal(refused.status, 401, 'unbind also revokes the refresh token');

    const later = await device({ simUser });
    assert.equal((await later.auth.login()).bound, false);
    await rejectsWith(auth.unbind(), 'not_logged_in', 0);
  });
});

describe('the authorised request wrapper', () => {
  test('refreshes once on 401 and retries once', async () => {
    const { wx, auth } = await registered();
    const before = auth.getTokens();
    wx.setStorageSync(`miniauth:${APPID}:tokens`, { ...before, access_token: `${before.access_token}x` });
    wx.requests.length = 0;

    const user = await me(auth);
    assert.equal(typeof user.user_id, 'number');
    assert.deepEqual(wx.calls(), ['GET /v1/me', 'POST /v1/token', 'GET /v1/me']);
    assert.notEqual(auth.getTokens().refresh_token, before.refresh_token, 'the refresh token rotated');
    assert.equal(wx.requests[2].header.Authorization, `Bearer ${auth.getTokens().access_token}`);
  });

  test('concurrent 401s share one refresh (a second would trip reuse detection)', async () => {
    const { wx, auth } = await registered();
    const before = auth.getTokens();
    wx.setStorageSync(`miniauth:${APPID}:tokens`, { ...before, access_token: 'not-a-jwt' });
    wx.requests.length = 0;

    const answers = await Promise.all([1, 2, 3].map(() => auth.request({ url: '/v1/me' })));
    assert.deepEqual(answers.map((a) => a.statusCode), [200, 200, 200]);
    assert.equal(wx.calls().filter((c) => c === 'POST /v1/token').length, 1);
  });

  test('gives up after one retry: a second 401 rejects with its code', async () => {
    const { wx, auth } = await registered();
    wx.intercept = (options) =>
      options.url.endsWith('/v1/me')
        ? { statusCode: 401, data: { code: 'access_token_invalid', detail: 'the access token is invalid', status: 401 }, header: {} }
        : undefined;
    wx.requests.length = 0;
    await rejectsWith(auth.request({ url: '/v1/me' }), 'access_token_invalid', 401);
    assert.deepEqual(wx.calls(), ['GET /v1/me', 'POST /v1/token', 'GET /v1/me']);
  });

  test('passes other statuses through like wx.request and accepts absolute URLs', async () => {
    const { auth } = await registered();
    const missing = await auth.request({ url: `${service.baseUrl}/v1/nothing-here` });
    assert.equal(missing.statusCode, 404);
    assert.equal(missing.data.code, 'route_not_found');
  });

  test('a revoked login rejects with the refresh code, forgets the tokens and asks for login()', async () => {
    const { wx, auth } = await registered();
    const tokens = auth.getTokens();
    await callApi(service, '/v1/logout', { refresh_token: tokens.refresh_token }, tokens.access_token);
    // The access token lives until it expires: let the module see it as expired.
    wx.setStorageSync(`miniauth:${APPID}:tokens`, { ...tokens, expires_at: Date.now() - 1000 });
    await assert.rejects(auth.request({ url: '/v1/me' }), (e) => {
      assert.equal(e.code, 'refresh_token_unknown');
      assert.equal(e.needsLogin, true);
      return true;
    });
    assert.equal(auth.getTokens(), null);
    assert.equal((await auth.login()).bound, true, 'login() recovers through WeChat');
  });
});

describe('logout', () => {
  test('revokes the refresh token and forgets the tokens; the user stays bound', async () => {
    const { wx, auth, outcome } = await registered();
    const refresh = auth.getTokens().refresh_token;

    await auth.logout();
    assert.equal(auth.getTokens(), null);
    assert.equal(wx.getStorageSync(`miniauth:${APPID}:tokens`), '');
    const refused = await callApi(service, '/v1/token', { grant_type: 'refresh_token', refresh_token: refresh });
    assert.equal(refused.status, 401);
    assert.equal(refused.body.code, 'refresh_token_unknown');
    await rejectsWith(auth.request({ url: '/v1/me' }), 'not_logged_in', 0);

    const again = await auth.login();
    assert.equal(again.bound, true);
    assert.equal((await me(auth)).user_id, outcome.userId);
    assert.equal(wx.logins, 2);
  });
});

describe('errors', () => {
  test('carry the API problem code and status', async () => {
    const { wx, auth } = await device();
    wx.loginCode = 'this-code-was-never-issued-by-wx';
    await rejectsWith(auth.login(), 'code_invalid', 400);

    const stranger = createMiniAuth({ baseUrl: service.baseUrl, appid: 'wxd000000000000009', wx: new FakeWx(service, { id: 1 }) });
    await rejectsWith(stranger.login(), 'unknown_app', 404);
  });

  test('a login code miniauth already answered makes one fresh wx.login', async () => {
    const { wx, auth, simUser } = await device();
    // Someone (an earlier request whose answer got lost, or whoever read a proxy's log)
    // already exchanged this code: miniauth answers it once only.
    const spent = await postJson(`${service.simUrl}/device/users/${simUser.id}/login`, { appid: APPID });
    const first = await callApi(service, `/v1/apps/${APPID}/sessions`, { code: spent.body.code });
    assert.equal(first.status, 200);
    const replay = await callApi(service, `/v1/apps/${APPID}/sessions`, { code: spent.body.code });
    assert.equal(replay.body.code, 'code_already_used');

    wx.loginCodes = [spent.body.code];
    const session = await auth.login();
    assert.equal(session.bound, false);
    assert.equal(wx.logins, 2, 'the answered code, then a fresh one');
  });

  test('steps out of order say what to do', async () => {
    const { wx, auth } = await device();
    await rejectsWith(auth.submitPhone(await new FakeWx(service, (await registered()).simUser).phoneCodeEvent()), 'no_ticket', 0);
    await rejectsWith(auth.submitProfile({ nickname: 'x', avatarUrl: 'https://example.com/x.png' }), 'no_ticket', 0);
    await rejectsWith(auth.bindWithPassword('someone', 'password'), 'no_ticket', 0);
    await rejectsWith(auth.request({ url: '/v1/me' }), 'not_logged_in', 0);
    await auth.login();
    await rejectsWith(auth.submitPhone({ detail: { errMsg: 'getPhoneNumber:ok' } }), 'invalid_event', 0);
    await rejectsWith(auth.submitProfile({ detail: { avatarUrl: 'https://example.com/x.png' } }), 'invalid_event', 0);
    await rejectsWith(auth.submitProfile({ detail: { errMsg: 'getUserInfo:fail auth deny' } }), 'profile_declined', 0);
    await rejectsWith(auth.submitProfile({ nickname: '', avatarUrl: 'https://example.com/x.png' }), 'invalid_field', 400);
    assert.equal(wx.logins, 1);
  });

  test('an unreachable service is a network_error', async () => {
    const { wx } = await device();
    const auth = createMiniAuth({ baseUrl: 'http://127.0.0.1:9', appid: APPID, wx });
    await rejectsWith(auth.login(), 'network_error', 0);
  });

  test('bad options fail at creation', () => {
    const wx = new FakeWx(service, { id: 1 });
    assert.throws(() => createMiniAuth({ baseUrl: 'auth.example.com', appid: APPID, wx }), /baseUrl/);
    assert.throws(() => createMiniAuth({ baseUrl: service.baseUrl, wx }), /appid/);
    assert.throws(() => createMiniAuth({ baseUrl: service.baseUrl, appid: APPID }), /wx/);
  });
});
