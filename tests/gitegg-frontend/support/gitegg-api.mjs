// The calls of GitEgg's mini program front end (its `login.js` API module), as the
// front end makes them: through flyio's WeChat build on top of `wx.request`, with the
// routes, parameters and HTTP Basic client header of GitEgg's API (shared/WECHAT.md).
// Written for this test from that description; no GitEgg code is copied here.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/**
 * A GitEgg front end for one app.
 * @param {{baseURL: string, appid: string, prefix?: string, formPosts?: boolean,
 *          client: {id: string, secret: string}}} options
 *   `formPosts`: the request interceptor forces `application/x-www-form-urlencoded` on
 *   every POST (the other style GitEgg front ends use); otherwise flyio's JSON default.
 */
export function gitEggFrontEnd({ baseURL, appid, prefix = '', formPosts = false, client }) {
  // flyio's WeChat build reads the global `wx` when it sends, as inside WeChat.
  const Fly = require('flyio/dist/npm/wx');
  const fly = new Fly();
  fly.config.baseURL = baseURL;
  const state = { token: '' };

  fly.interceptors.request.use((request) => {
    if (state.token && !request.headers.Authorization) {
      request.headers.Authorization = `Bearer ${state.token}`;
    }
    if (formPosts && request.method === 'POST') {
      request.headers['Content-Type'] = 'application/x-www-form-urlencoded';
    }
    return request;
  });
  // The envelope is the answer: GitEgg's front end reads `success`, `code`, `data`.
  fly.interceptors.response.use((response) => response.data);

  const wxUser = (route) => `${prefix}/wx/user/${appid}/${route}`;
  const basic = `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}`;

  return {
    state,
    getOpenId: (code) => fly.get(wxUser('login'), { code }),
    getUserInfo: (socialKey, { signature, rawData, encryptedData, iv }) =>
      fly.get(wxUser('info'), { socialKey, signature, rawData, encryptedData, iv }),
    getUserPhone: (socialKey, { encryptedData, iv }) => fly.get(wxUser('phone'), { socialKey, encryptedData, iv }),
    bindWeChatUser: (socialKey) => fly.get(wxUser('bind'), { socialKey }),
    unbindWeChatUser: () => fly.get(wxUser('unbind')),
    postToken: (data) => fly.post('/oauth/token', data, { headers: { Authorization: basic } }),
    logout: (data) => (data === undefined ? fly.post('/oauth/logout') : fly.post('/oauth/logout', data)),
    getLoginUserInfo: () => fly.get('/system/account/user/info'),
  };
}
