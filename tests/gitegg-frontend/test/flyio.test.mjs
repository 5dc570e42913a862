// Every call of GitEgg's mini program front end, made by the real flyio WeChat build
// over a `wx.request` that behaves as WeChat documents it, against a real miniauth:
// once with flyio's JSON default for POSTs, once with a request interceptor that forces
// form bodies. Each call must succeed with GitEgg's envelope.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  APPID,
  createPasswordUser,
  createWeChatUser,
  postJson,
  startService,
} from '../../../miniprogram/test-support/harness.mjs';
import { gitEggFrontEnd } from '../support/gitegg-api.mjs';
import { createWx } from '../support/wx-request.mjs';

const CLIENT = { id: 'gitegg-mini', secret: 'gitegg-client-secret' };

let service;
before(async () => {
  service = await startService({
    extraConfig: `[[compat.clients]]\nid = "${CLIENT.id}"\nsecret = "${CLIENT.secret}"\n`,
  });
});
after(async () => {
  await service?.stop();
});

/** What the device (the simulated phone) hands the mini program. */
const device = {
  async login(user) {
    const answer = await postJson(`${service.simUrl}/device/users/${user.id}/login`, { appid: APPID });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return answer.body.code;
  },
  async userInfo(user) {
    const answer = await postJson(`${service.simUrl}/device/users/${user.id}/user-info`, { appid: APPID });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return answer.body;
  },
  async phone(user) {
    const answer = await postJson(`${service.simUrl}/device/users/${user.id}/phone`, { appid: APPID });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return answer.body;
  },
};

/** GitEgg's envelope of a success; answers its `data`. */
function ok(envelope, what) {
  assert.equal(typeof envelope, 'object', `${what}: not parsed as JSON: ${envelope}`);
  assert.deepEqual([envelope.success, envelope.code], [true, 200], `${what}: ${JSON.stringify(envelope)}`);
  return envelope.data;
}

/** GitEgg's envelope of a refusal with `code`. */
function refused(envelope, code, what) {
  assert.deepEqual([envelope.success, envelope.code], [false, code], `${what}: ${JSON.stringify(envelope)}`);
}

for (const style of [
  { name: 'JSON posts (flyio default), /wx prefix', formPosts: false, prefix: '' },
  { name: 'form posts (interceptor), /extension prefix', formPosts: true, prefix: '/extension' },
]) {
  describe(`GitEgg front end through flyio: ${style.name}`, () => {
    let wx;
    let api;
    before(() => {
      wx = createWx();
      globalThis.wx = wx;
      api = gitEggFrontEnd({ baseURL: service.baseUrl, appid: APPID, client: CLIENT, ...style });
    });

    test('a new user: login, legacy profile, legacy phone, then user info and refresh', async () => {
      const person = await createWeChatUser(service, { nickname: 'Flyio Fang' });
      const login = ok(await api.getOpenId(await device.login(person)), 'getOpenId');
      assert.equal(login.userBindAlready, false);
      assert.match(login.openid, /^o/);

      const info = ok(await api.getUserInfo(login.bindKey, await device.userInfo(person)), 'getUserInfo');
      assert.equal(info.nickName, 'Flyio Fang');

      const phone = ok(await api.getUserPhone(login.bindKey, await device.phone(person)), 'getUserPhone');
      assert.equal(phone.registered, true);
      assert.equal(phone.tokenHead, 'Bearer ');
      api.state.token = phone.token;

      const me = ok(await api.getLoginUserInfo(), 'getLoginUserInfo');
      assert.deepEqual(me.bindings, [{ appid: APPID, kind: 'mini_program', openid: login.openid }]);

      const refreshed = ok(
        await api.postToken({ grant_type: 'refresh_token', refresh_token: phone.refreshToken }),
        'postToken refresh_token',
      );
      api.state.token = refreshed.token;
      ok(await api.getLoginUserInfo(), 'getLoginUserInfo after refresh');

      // A refresh token in the body is still honoured by logout.
      ok(await api.logout({ refreshToken: refreshed.refreshToken }), 'logout with refreshToken');
      refused(await api.getLoginUserInfo(), 401, 'user info after logout');
      api.state.token = '';
    });

    test('a password user binds a WeChat identity, logs in by it, unbinds, and logs out without a body', async () => {
      const account = `fly${style.formPosts ? 'form' : 'json'}${process.pid}`;
      await createPasswordUser(service, { account, password: 'correct horse battery' });
      const password = ok(
        await api.postToken({ grant_type: 'password', username: account, password: 'correct horse battery' }),
        'postToken password',
      );
      api.state.token = password.token;

      const person = await createWeChatUser(service, { nickname: 'Declines Phone', phone: null });
      const first = ok(await api.getOpenId(await device.login(person)), 'getOpenId');
      const bound = ok(await api.bindWeChatUser(first.bindKey), 'bindWeChatUser');
      assert.equal(typeof bound.userId, 'number');

      // The next launch: already bound, the bind key buys tokens (social grant).
      const again = ok(await api.getOpenId(await device.login(person)), 'getOpenId again');
      assert.equal(again.userBindAlready, true);
      const social = ok(await api.postToken({ grant_type: 'social', social_key: again.bindKey }), 'postToken social');
      api.state.token = social.token;
      const me = ok(await api.getLoginUserInfo(), 'getLoginUserInfo');
      assert.equal(me.account, account);

      ok(await api.unbindWeChatUser(), 'unbindWeChatUser');

      // GitEgg's logout(): fly.post('/oauth/logout') with no data at all.
      api.state.token = password.token;
      ok(await api.getLoginUserInfo(), 'the password session still lives');
      ok(await api.logout(), 'logout without a body');
      refused(await api.getLoginUserInfo(), 401, 'user info after logout');
      refused(
        await api.postToken({ grant_type: 'refresh_token', refresh_token: password.refreshToken }),
        401,
        'the logged-out session refreshes',
      );
      api.state.token = '';

      // What went on the wire is what flyio's WeChat build makes.
      const posts = wx.requests.filter((r) => r.method === 'POST');
      const logout = posts.find((r) => r.url.endsWith('/oauth/logout') && !r.body);
      assert.ok(logout, 'an empty logout went out');
      const contentTypes = new Set(posts.map((r) => String(r.header['Content-Type'] || r.header['content-type'])));
      if (style.formPosts) {
        assert.deepEqual([...contentTypes], ['application/x-www-form-urlencoded']);
      } else {
        assert.ok(contentTypes.has('application/json;charset=utf-8'), [...contentTypes].join(', '));
      }
      const gets = wx.requests.filter((r) => r.method === 'GET' && r.url.includes('/info?'));
      for (const get of gets) {
        // flyio writes a space as `+` (rawData's nickname) and a `+` as `%2B` (base64).
        const raw = Object.fromEntries(get.url.split('?')[1].split('&').map((pair) => pair.split('=')));
        assert.doesNotMatch(raw.encryptedData + raw.iv, /\+/, 'base64 in a query is percent-encoded');
      }
      assert.ok(
        posts.every((r) => !r.url.endsWith('/oauth/token') || r.header.Authorization.startsWith('Basic ')),
        'postToken sends the client credentials',
      );
    });
  });
}
