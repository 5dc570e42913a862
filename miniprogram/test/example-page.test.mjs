// The example pages, run as WeChat would run them (Page(), getApp(), wx), against a
// real miniauth: they must work, and use the module's public functions only.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { runInNewContext } from 'node:vm';
import { after, before, describe, test } from 'node:test';

import { createMiniAuth } from '../miniauth.js';
import { APPID, FakeWx, createPasswordUser, createWeChatUser, startService, uniquePhone } from '../test-support/harness.mjs';

const PUBLIC = ['login', 'submitProfile', 'submitPhone', 'bindWithPassword', 'unbind', 'logout', 'request', 'getTokens'];
const source = (page) => readFileSync(new URL(`../example/pages/${page}/${page}.js`, import.meta.url), 'utf8');

let service;

before(async () => {
  service = await startService();
});

after(async () => {
  if (service) await service.stop();
});

/** Loads a page for one phone: its definition bound to a fake page instance. */
function loadPage(page, wx, auth) {
  let definition;
  const navigations = [];
  // The page sees the UI half of wx; the login half belongs to the module.
  const uiWx = { reLaunch: ({ url }) => navigations.push(url) };
  runInNewContext(source(page), {
    Page: (def) => {
      definition = def;
    },
    getApp: () => ({ auth }),
    wx: uiWx,
  });
  const instance = {
    ...definition,
    data: structuredClone(definition.data),
    setData(patch) {
      Object.assign(this.data, patch);
    },
  };
  return { page: instance, navigations, wx };
}

async function phone(options = {}) {
  const simUser = options.simUser || (await createWeChatUser(service, options));
  const wx = new FakeWx(service, simUser);
  const auth = createMiniAuth({ baseUrl: service.baseUrl, appid: APPID, wx });
  return { wx, auth, simUser };
}

describe('the example pages', () => {
  test('use only the module public functions, never wx login, request or storage', () => {
    for (const page of ['login', 'home']) {
      const text = source(page);
      assert.doesNotMatch(text, /wx\.(login|checkSession|request|\w*Storage\w*)\b/, page);
      const used = [...text.matchAll(/auth\(\)\.(\w+)/g)].map((m) => m[1]);
      assert.ok(used.length > 0, page);
      for (const name of used) assert.ok(PUBLIC.includes(name), `${page} uses auth().${name}`);
    }
  });

  test('a new user: authorise with avatar and nickname, then the phone button', async () => {
    const { wx, auth } = await phone();
    const { page, navigations } = loadPage('login', wx, auth);

    await page.onLoad();
    assert.equal(page.data.step, 'profile');
    page.onChooseAvatar({ detail: { avatarUrl: 'wxfile://tmp/avatar.png' } });
    await page.onSubmitProfile({ detail: { value: { nickname: 'Pat' } } });
    assert.equal(page.data.step, 'phone', page.data.error);
    await page.onGetPhoneNumber(await wx.phoneCodeEvent());
    assert.deepEqual(navigations, ['/pages/home/home'], page.data.error);
    assert.equal(wx.logins, 1);

    const home = loadPage('home', wx, auth);
    await home.page.onShow();
    assert.equal(home.page.data.me.nickname, 'Pat');
    await home.page.onLogout();
    assert.deepEqual(home.navigations, ['/pages/login/login']);
    assert.equal(auth.getTokens(), null);
  });

  test('a declined phone leads to account + password, which binds; home unlinks', async () => {
    const account = `dana${uniquePhone()}`;
    const dana = await createPasswordUser(service, { account, password: 'correct horse battery' });
    const { wx, auth } = await phone({ phone: null });
    const { page, navigations } = loadPage('login', wx, auth);

    await page.onLoad();
    page.onSkipProfile();
    await page.onGetPhoneNumber(wx.declinedPhoneEvent());
    assert.equal(page.data.step, 'password');
    assert.equal(page.data.error, '');
    await page.onSubmitPassword({ detail: { value: { account, password: 'not the password' } } });
    assert.equal(page.data.error, 'account or password is wrong');
    assert.deepEqual(navigations, []);
    await page.onSubmitPassword({ detail: { value: { account, password: 'correct horse battery' } } });
    assert.deepEqual(navigations, ['/pages/home/home'], page.data.error);

    const home = loadPage('home', wx, auth);
    await home.page.onShow();
    assert.equal(home.page.data.me.user_id, dana.user_id);
    await home.page.onUnbind();
    assert.deepEqual(home.navigations, ['/pages/login/login'], home.page.data.error);

    const again = loadPage('login', wx, auth);
    await again.page.onLoad();
    assert.equal(again.page.data.step, 'profile', 'unbound: the flow starts over');
  });

  test('a returning user goes straight home', async () => {
    const first = await phone();
    await first.auth.login();
    await first.auth.submitPhone(await first.wx.phoneCodeEvent());

    const { wx, auth } = await phone({ simUser: first.simUser });
    const { page, navigations } = loadPage('login', wx, auth);
    await page.onLoad();
    assert.deepEqual(navigations, ['/pages/home/home']);
    assert.deepEqual(wx.calls(), [`POST /v1/apps/${APPID}/sessions`]);
  });

  test('a ticket superseded while the page waited starts the login over', async () => {
    const { wx, auth, simUser } = await phone();
    const { page, navigations } = loadPage('login', wx, auth);
    await page.onLoad();
    page.onSkipProfile();
    const event = await wx.phoneCodeEvent();
    // The same WeChat user logs in on another phone meanwhile.
    await (await phone({ simUser })).auth.login();
    await page.onGetPhoneNumber(event);
    assert.deepEqual(navigations, []);
    assert.equal(page.data.error, '');
    assert.equal(page.data.step, 'profile', 'the flow starts over');
    assert.equal(wx.logins, 2, 'with a new session: the superseded ticket is not offered again');
    page.onSkipProfile();
    await page.onGetPhoneNumber(await wx.phoneCodeEvent());
    assert.deepEqual(navigations, ['/pages/home/home'], page.data.error);
  });
});
