// miniauth for mini programs: WeChat login, profile, phone, password binding and an
// authorised request wrapper, against miniauth's v1 API (docs/api.md).
//
// Dependency-free and built on plain `wx.*` calls only, so it runs in native mini
// programs and, given their `wx`-compatible object (`uni`, `Taro`), in uni-app, Taro
// and mpvue. `miniauth.cjs` is the CommonJS build of this file (`node build.mjs`).

const TICKET_MARGIN_MS = 60 * 1000;
// Refresh a little before the server would refuse the access token: the device clock
// and the server's rarely agree to the second. A 401 is still handled if they differ more.
const ACCESS_MARGIN_MS = 5 * 1000;

/**
 * Codes that mean "call login() again": the ticket is gone, stale, superseded or used,
 * or the session key refused a payload (miniauth allows a few per key; a new login
 * brings a fresh key).
 */
const RELOGIN_CODES = [
  'no_ticket',
  'ticket_missing',
  'ticket_malformed',
  'ticket_forged',
  'ticket_expired',
  'ticket_app_mismatch',
  'ticket_unknown_session',
  'ticket_session_superseded',
  'ticket_already_used',
  'payload_rejected',
  'session_key_spent',
  'code_already_used',
  'no_session',
  'not_logged_in',
  'refresh_token_unknown',
  'refresh_token_expired',
  'refresh_token_reused',
];

/**
 * Every failure of the module. `code` is miniauth's stable problem code (docs/api.md,
 * "Error codes") or one of the module's own: `network_error`, `wx_login_failed`,
 * `no_ticket`, `not_logged_in`, `phone_declined`, `invalid_event`, `invalid_response`,
 * `http_error`. `status` is the HTTP status (0 when no answer came).
 */
export class MiniAuthError extends Error {
  constructor(code, message, status, problem) {
    super(message);
    this.name = 'MiniAuthError';
    this.code = code;
    this.status = status || 0;
    this.problem = problem || null;
  }

  /** Whether the way forward is a fresh `login()`. */
  get needsLogin() {
    return RELOGIN_CODES.includes(this.code);
  }
}

// Called as a method: `uni` and `Taro` objects may rely on `this`.
function promisify(api, name, options) {
  return new Promise((resolve, reject) => {
    api[name](Object.assign({}, options, { success: resolve, fail: reject }));
  });
}

function errMsgOf(value) {
  if (value && typeof value.errMsg === 'string') return value.errMsg;
  if (value && typeof value.message === 'string') return value.message;
  return String(value);
}

function detailOf(input) {
  if (input && typeof input === 'object' && input.detail && typeof input.detail === 'object') {
    return input.detail;
  }
  return input || {};
}

function problemError(response) {
  const body = response.data && typeof response.data === 'object' ? response.data : null;
  if (body && typeof body.code === 'string') {
    return new MiniAuthError(body.code, body.detail || body.title || body.code, response.statusCode, body);
  }
  return new MiniAuthError('http_error', `miniauth answered HTTP ${response.statusCode}`, response.statusCode, null);
}

/**
 * Creates the login module of one mini program.
 *
 * @param {object} options
 * @param {string} options.baseUrl  miniauth's URL, e.g. `https://auth.example.com`
 *   (add it to the mini program's legal request domains).
 * @param {string} options.appid    this mini program's AppID.
 * @param {object} [options.wx]     the `wx` object; defaults to the global `wx`. Pass
 *   `uni` (uni-app) or `Taro` there, or a fake in tests.
 * @param {string} [options.storagePrefix] storage key prefix (default `miniauth:`).
 */
export function createMiniAuth(options) {
  const { baseUrl, appid } = options || {};
  const wxApi = (options && options.wx) || (typeof wx !== 'undefined' ? wx : undefined); // eslint-disable-line no-undef
  if (!wxApi) throw new MiniAuthError('invalid_options', 'no wx object: pass createMiniAuth({ wx })');
  if (typeof baseUrl !== 'string' || !/^https?:\/\//.test(baseUrl)) {
    throw new MiniAuthError('invalid_options', 'baseUrl must be an http(s) URL');
  }
  if (typeof appid !== 'string' || !appid) throw new MiniAuthError('invalid_options', 'appid is required');
  const base = baseUrl.replace(/\/+$/, '');
  const prefix = `${(options && options.storagePrefix) || 'miniauth:'}${appid}:`;
  const TOKENS_KEY = `${prefix}tokens`;
  const TICKET_KEY = `${prefix}ticket`;
  const appPath = `/v1/apps/${encodeURIComponent(appid)}`;

  // One refresh at a time: refresh tokens rotate, and presenting the same one twice
  // revokes the whole login (reuse detection), so concurrent 401s must share it.
  let refreshing = null;

  function load(key) {
    try {
      const value = wxApi.getStorageSync(key);
      return value && typeof value === 'object' ? value : null;
    } catch (e) {
      return null;
    }
  }

  function save(key, value) {
    if (value === null) wxApi.removeStorageSync(key);
    else wxApi.setStorageSync(key, value);
  }

  // `flags` ({has_profile, has_phone}) are what login() answers from the cache; a
  // refresh keeps the previous ones.
  function saveTokens(tokens, flags) {
    if (!tokens || typeof tokens.access_token !== 'string' || typeof tokens.refresh_token !== 'string') {
      throw new MiniAuthError('invalid_response', 'miniauth answered no tokens', 0);
    }
    const now = Date.now();
    const stored = {
      access_token: tokens.access_token,
      token_type: tokens.token_type || 'Bearer',
      refresh_token: tokens.refresh_token,
      expires_at: now + Number(tokens.expires_in || 0) * 1000,
      refresh_expires_at: now + Number(tokens.refresh_expires_in || 0) * 1000,
    };
    const previous = flags ? null : load(TOKENS_KEY);
    const known = flags || previous || {};
    stored.has_profile = !!known.has_profile;
    stored.has_phone = !!known.has_phone;
    save(TOKENS_KEY, stored);
    return stored;
  }

  function saveTicket(session) {
    const held = {
      ticket: session.ticket,
      expires_at: Date.now() + Number(session.ticket_expires_in || 0) * 1000,
      has_profile: !!session.has_profile,
      has_phone: !!session.has_phone,
    };
    save(TICKET_KEY, held);
    return held;
  }

  function heldTicket() {
    const held = load(TICKET_KEY);
    if (!held || typeof held.ticket !== 'string') return null;
    if (Date.now() >= held.expires_at - TICKET_MARGIN_MS) return null;
    return held;
  }

  function requireTicket() {
    const held = heldTicket();
    if (!held) throw new MiniAuthError('no_ticket', 'no valid ticket: call login() first', 0);
    return held.ticket;
  }

  // A call with the held ticket. A ticket refused as stale is dropped, so that the
  // next login() starts a new session instead of offering it again.
  async function withTicket(method, path, data, accessToken) {
    try {
      return await api(method, path, data, accessToken);
    } catch (e) {
      if (e.needsLogin) save(TICKET_KEY, null);
      throw e;
    }
  }

  // wx.request resolves for every HTTP status; only a transport failure lands in `fail`.
  async function send(req) {
    const header = Object.assign({}, req.header);
    if (!Object.keys(header).some((name) => name.toLowerCase() === 'content-type')) {
      header['content-type'] = 'application/json';
    }
    try {
      return await promisify(
        wxApi,
        'request',
        Object.assign({}, req, { method: req.method || 'GET', header, dataType: req.dataType || 'json' }),
      );
    } catch (e) {
      throw new MiniAuthError('network_error', `cannot reach miniauth: ${errMsgOf(e)}`, 0);
    }
  }

  // A call of miniauth's own API: an answer of 400 or more becomes a MiniAuthError.
  async function api(method, path, data, accessToken) {
    const header = accessToken ? { Authorization: `Bearer ${accessToken}` } : {};
    const response = await send({ method, url: base + path, data, header });
    if (response.statusCode >= 400) throw problemError(response);
    return response.data;
  }

  function refresh() {
    if (!refreshing) {
      refreshing = (async () => {
        const tokens = load(TOKENS_KEY);
        if (!tokens) throw new MiniAuthError('not_logged_in', 'not logged in: call login() first', 0);
        try {
          const answer = await api('POST', '/v1/token', {
            grant_type: 'refresh_token',
            refresh_token: tokens.refresh_token,
          });
          return saveTokens(answer);
        } catch (e) {
          // A refused refresh token will never work again; a network error might.
          if (e.status === 401) save(TOKENS_KEY, null);
          throw e;
        }
      })().then(
        // Not `finally`: older base libraries lack it.
        (tokens) => {
          refreshing = null;
          return tokens;
        },
        (e) => {
          refreshing = null;
          throw e;
        },
      );
    }
    return refreshing;
  }

  async function freshTokens() {
    const tokens = load(TOKENS_KEY);
    if (!tokens) throw new MiniAuthError('not_logged_in', 'not logged in: call login() first', 0);
    if (Date.now() >= tokens.expires_at - ACCESS_MARGIN_MS) return refresh();
    return tokens;
  }

  // Sends with the access token; on 401 refreshes once and retries once. `build`
  // makes the request from the tokens in use, so a retry carries the rotated ones.
  async function authorised(build) {
    let tokens = await freshTokens();
    let response = await send(build(tokens));
    if (response.statusCode !== 401) return response;
    const used = tokens.access_token;
    const current = load(TOKENS_KEY);
    // Another call may have refreshed while this one was in flight.
    tokens = current && current.access_token !== used ? current : await refresh();
    response = await send(build(tokens));
    if (response.statusCode === 401) throw problemError(response);
    return response;
  }

  function withBearer(tokens, header) {
    return Object.assign({}, header, { Authorization: `Bearer ${tokens.access_token}` });
  }

  async function wxLoginCode() {
    let result;
    try {
      result = await promisify(wxApi, 'login', {});
    } catch (e) {
      throw new MiniAuthError('wx_login_failed', `wx.login failed: ${errMsgOf(e)}`, 0);
    }
    if (!result || !result.code) throw new MiniAuthError('wx_login_failed', 'wx.login gave no code', 0);
    return result.code;
  }

  /**
   * `wx.login` and one call to miniauth. A code yields credentials once: when miniauth
   * already answered this code (`code_already_used`: an earlier request whose answer
   * got lost, or a code replayed from a log), one fresh `wx.login` and one more call.
   */
  async function newSession() {
    try {
      return await api('POST', `${appPath}/sessions`, { code: await wxLoginCode() });
    } catch (e) {
      if (!(e instanceof MiniAuthError) || e.code !== 'code_already_used') throw e;
      return api('POST', `${appPath}/sessions`, { code: await wxLoginCode() });
    }
  }

  async function sessionAlive() {
    try {
      await promisify(wxApi, 'checkSession', {});
      return true;
    } catch (e) {
      return false;
    }
  }

  /**
   * Logs in: a cached token first (no request), then a held ticket whose WeChat session
   * is still alive (`wx.checkSession`, no request), else `wx.login` and one call to
   * miniauth. A returning, bound user gets tokens from that one call.
   *
   * @param {{force?: boolean}} [opts] `force`: skip the caches and start a new session.
   * @returns {Promise<{bound: boolean, tokens: object|null, hasProfile: boolean, hasPhone: boolean}>}
   */
  async function login(opts) {
    const force = !!(opts && opts.force);
    if (!force) {
      const tokens = load(TOKENS_KEY);
      if (tokens && Date.now() < tokens.refresh_expires_at) {
        try {
          const usable = await freshTokens();
          return { bound: true, tokens: usable, hasProfile: usable.has_profile, hasPhone: usable.has_phone };
        } catch (e) {
          if (e.code === 'network_error') throw e;
          // Refresh refused: fall through to a WeChat login.
        }
      }
      // Calling wx.login again would rotate the session key under a payload the user
      // may be about to submit (the phone button): keep a ticket that still works.
      const held = heldTicket();
      if (held && (await sessionAlive())) {
        return { bound: false, tokens: null, hasProfile: held.has_profile, hasPhone: held.has_phone };
      }
    }
    save(TOKENS_KEY, null);
    const session = await newSession();
    if (!session || typeof session.ticket !== 'string') {
      throw new MiniAuthError('invalid_response', 'miniauth answered no ticket', 0);
    }
    saveTicket(session);
    let tokens = null;
    if (session.bound) {
      tokens = saveTokens(
        session.tokens || (await api('POST', '/v1/token', { grant_type: 'ticket', ticket: session.ticket })),
        session,
      );
    }
    return {
      bound: !!session.bound,
      tokens,
      hasProfile: !!session.has_profile,
      hasPhone: !!session.has_phone,
    };
  }

  /**
   * Records the profile under the held ticket. Takes the `chooseAvatar` + nickname
   * values as `{nickname, avatarUrl}` (a form's submit event works too), or the legacy
   * `getUserInfo` result / event `{rawData, signature, encryptedData, iv}`.
   * @returns {Promise<{nickname: string, avatarUrl: string}>}
   */
  async function submitProfile(input) {
    const ticket = requireTicket();
    const detail = detailOf(input);
    let body;
    if (detail.encryptedData && detail.iv && detail.rawData && detail.signature) {
      body = {
        ticket,
        raw_data: detail.rawData,
        signature: detail.signature,
        encrypted_data: detail.encryptedData,
        iv: detail.iv,
      };
    } else {
      const fields = detail.value && typeof detail.value === 'object' ? detail.value : detail;
      const nickname = fields.nickname !== undefined ? fields.nickname : fields.nickName;
      const avatarUrl = fields.avatarUrl !== undefined ? fields.avatarUrl : fields.avatar_url;
      if (typeof detail.errMsg === 'string' && /deny|fail|cancel/i.test(detail.errMsg)) {
        throw new MiniAuthError('profile_declined', 'the user declined to share the profile', 0);
      }
      if (typeof nickname !== 'string' || typeof avatarUrl !== 'string') {
        throw new MiniAuthError(
          'invalid_event',
          'submitProfile needs {nickname, avatarUrl} or {rawData, signature, encryptedData, iv}',
          0,
        );
      }
      body = { ticket, nickname, avatar_url: avatarUrl };
    }
    const answer = await withTicket('POST', `${appPath}/profile`, body);
    const held = heldTicket();
    if (held) save(TICKET_KEY, Object.assign({}, held, { has_profile: true }));
    return { nickname: answer.nickname, avatarUrl: answer.avatar_url };
  }

  /**
   * Sends the phone button's answer (`<button open-type="getPhoneNumber"
   * bindgetphonenumber="…">`): its one-time `code`, or the legacy `encryptedData` + `iv`.
   * Never calls `wx.login`: that would rotate the session key the payload was
   * encrypted under. Declined: rejects with `phone_declined`.
   * @returns {Promise<{userId: number, registered: boolean, tokens: object}>}
   */
  async function submitPhone(event) {
    const detail = detailOf(event);
    let payload;
    if (typeof detail.code === 'string' && detail.code) {
      payload = { code: detail.code };
    } else if (detail.encryptedData && detail.iv) {
      payload = { encrypted_data: detail.encryptedData, iv: detail.iv };
    } else if (typeof detail.errMsg === 'string' && /deny|fail|cancel/i.test(detail.errMsg)) {
      throw new MiniAuthError('phone_declined', 'the user declined to share the phone number', 0);
    } else {
      throw new MiniAuthError('invalid_event', 'the phone event carries neither code nor encryptedData + iv', 0);
    }
    const held = heldTicket();
    const ticket = requireTicket();
    const answer = await withTicket('POST', `${appPath}/phone`, Object.assign({ ticket }, payload));
    const tokens = saveTokens(answer.tokens, { has_profile: held.has_profile, has_phone: true });
    save(TICKET_KEY, null);
    return { userId: answer.user_id, registered: !!answer.registered, tokens };
  }

  /**
   * The user declined the phone: log in with account + password, then bind the WeChat
   * identity of the held ticket to that account.
   * @returns {Promise<{userId: number, tokens: object}>}
   */
  async function bindWithPassword(account, password) {
    const held = heldTicket();
    const ticket = requireTicket();
    const granted = await api('POST', '/v1/token', { grant_type: 'password', account, password });
    let bound;
    try {
      bound = await withTicket('POST', `${appPath}/binding`, { ticket }, granted.access_token);
    } catch (e) {
      // Not bound: do not leave a login behind that the user did not end up with.
      api('POST', '/v1/logout', { refresh_token: granted.refresh_token }, granted.access_token).catch(() => {});
      throw e;
    }
    const tokens = saveTokens(granted, held);
    save(TICKET_KEY, null);
    return { userId: bound.user_id, tokens };
  }

  /**
   * Unbinds this mini program's WeChat identity from the user (the user's other
   * bindings stay), then logs out: this WeChat identity no longer leads to the user.
   */
  async function unbind() {
    const response = await authorised((tokens) => ({
      method: 'DELETE',
      url: `${base}${appPath}/binding`,
      header: withBearer(tokens),
    }));
    if (response.statusCode >= 400) throw problemError(response);
    await logout();
  }

  /** Revokes the refresh token on the server (best effort) and forgets tokens and ticket. */
  async function logout() {
    const held = load(TOKENS_KEY);
    save(TICKET_KEY, null);
    if (!held) return;
    try {
      await authorised((tokens) => ({
        method: 'POST',
        url: `${base}/v1/logout`,
        data: { refresh_token: tokens.refresh_token },
        header: withBearer(tokens),
      }));
    } catch (e) {
      // Already revoked or unreachable: the device forgets the tokens all the same.
    } finally {
      save(TOKENS_KEY, null);
    }
  }

  /**
   * `wx.request` with the access token: a path (`/orders`) is resolved against
   * `baseUrl`, an absolute URL is used as is. A 401 refreshes the token once and
   * retries once. Resolves with wx.request's `{statusCode, data, header}` for any other
   * status; rejects with a MiniAuthError when not logged in or the login is gone.
   */
  function request(requestOptions) {
    const opts = Object.assign({}, requestOptions);
    const url = /^https?:\/\//.test(opts.url || '') ? opts.url : base + (opts.url || '');
    return authorised((tokens) => Object.assign({}, opts, { url, header: withBearer(tokens, opts.header) }));
  }

  /** The stored tokens `{access_token, refresh_token, expires_at, …}`, or null. */
  function getTokens() {
    return load(TOKENS_KEY);
  }

  return { login, submitProfile, submitPhone, bindWithPassword, unbind, logout, request, getTokens };
}

export default createMiniAuth;
