// Test harness: a real miniauth (with its in-process WeChat simulator) spawned from the
// workspace's binary, and a fake `wx` whose login, request, checkSession and storage
// talk to it, as a mini program inside WeChat would.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const APPID = 'wxd000000000000001';
export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';

function binaryPath() {
  if (process.env.MINIAUTH_BIN) return process.env.MINIAUTH_BIN;
  const targetDir = process.env.CARGO_TARGET_DIR || join(ROOT, 'target');
  return join(targetDir, 'debug', 'miniauth');
}

/** The miniauth binary, built with `cargo build -p miniauth` when it is missing. */
export function ensureBinary() {
  const bin = binaryPath();
  if (existsSync(bin)) return bin;
  const built = spawnSync('cargo', ['build', '-p', 'miniauth'], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  if (built.error) {
    throw new Error(`the miniauth binary is missing at ${bin} and cargo cannot run (${built.error.message}): build it with \`cargo build -p miniauth\``);
  }
  if (built.status !== 0 || !existsSync(bin)) {
    throw new Error(`\`cargo build -p miniauth\` failed (exit ${built.status}); no binary at ${bin}`);
  }
  return bin;
}

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.unref();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

/**
 * Starts `miniauth serve` on a fresh SQLite database with the simulator.
 * @param {{tokens?: object, registration?: string, extraConfig?: string}} [options]
 */
export async function startService(options = {}) {
  const bin = ensureBinary();
  const dir = mkdtempSync(join(tmpdir(), 'miniauth-mp-'));
  const [port, simPort] = [await freePort(), await freePort()];
  const tokens = Object.entries(options.tokens || {})
    .map(([key, value]) => `${key} = ${value}`)
    .join('\n');
  const config = `
[server]
listen = "127.0.0.1:${port}"
[store]
url = "sqlite://${join(dir, 'miniauth.db')}"
data_dir = "${dir}"
[wechat]
api_base = "simulator"
simulator_listen = "127.0.0.1:${simPort}"
[[apps]]
appid = "${APPID}"
secret = "mini-program-test-secret"
registration = "${options.registration || 'auto'}"
[admin]
token = "${ADMIN_TOKEN}"
# Every test client is 127.0.0.1: one login budget would be shared by the whole suite.
[throttle]
logins_per_client = 100000
[tokens]
${tokens}
[log]
level = "warn"
${options.extraConfig || ''}
`;
  const configPath = join(dir, 'miniauth.toml');
  writeFileSync(configPath, config);
  const child = spawn(bin, ['serve', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const baseUrl = await new Promise((ok, fail) => {
    let stdout = '';
    const timer = setTimeout(() => fail(new Error(`miniauth did not start within 30 s:\n${stderr}`)), 30_000);
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      const match = /miniauth listening on (http:\/\/\S+)/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        ok(match[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`miniauth exited with ${code} before listening:\n${stderr}`));
    });
  });
  const simUrl = `http://127.0.0.1:${simPort}`;
  await waitFor(`${simUrl}/sim/calls`);
  return {
    baseUrl,
    simUrl,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((ok) => child.once('exit', ok));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function waitFor(url) {
  for (let i = 0; i < 100; i += 1) {
    try {
      const response = await fetch(url);
      if (response.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((ok) => setTimeout(ok, 100));
  }
  throw new Error(`${url} never answered`);
}

export async function postJson(url, body, bearer) {
  const headers = { 'content-type': 'application/json' };
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  const response = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

let phoneCounter = 0;
/** A mobile number no other test of this process uses. */
export function uniquePhone() {
  phoneCounter += 1;
  const n = (process.pid * 1000 + phoneCounter) % 100_000_000;
  return `139${String(n).padStart(8, '0')}`;
}

/** A WeChat user in the simulator; `phone: null` for one without a phone. */
export async function createWeChatUser(service, { nickname = 'Tester', phone = uniquePhone() } = {}) {
  const body = { nickname, avatar_url: 'https://example.com/avatar.png' };
  if (phone) Object.assign(body, { phone, country_code: '86' });
  const answer = await postJson(`${service.simUrl}/device/users`, body);
  if (answer.status !== 201) throw new Error(`creating a simulated user: ${answer.status} ${JSON.stringify(answer.body)}`);
  return { id: answer.body.user_id, phone };
}

/** A password user created by the administrator. */
export async function createPasswordUser(service, { account, password, mobile }) {
  const body = { account, password, nickname: account };
  if (mobile) body.mobile = mobile;
  const answer = await postJson(`${service.baseUrl}/v1/admin/users`, body, ADMIN_TOKEN);
  if (answer.status !== 201) throw new Error(`creating a password user: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
}

/** Calls miniauth directly, outside the module (to check what the server thinks). */
export function callApi(service, path, body, bearer) {
  return postJson(`${service.baseUrl}${path}`, body, bearer);
}

/**
 * The `wx` of one phone running the mini program as one simulated WeChat user.
 * Records every `wx.request` (`requests`) and counts `wx.login` calls (`logins`).
 */
export class FakeWx {
  constructor(service, simUser, { appid = APPID } = {}) {
    this.service = service;
    this.simUser = simUser;
    this.appid = appid;
    this.storage = new Map();
    this.requests = [];
    this.logins = 0;
    this.sessionAlive = false;
    /** Optional `(options) => response | undefined` answering a request instead of the network. */
    this.intercept = null;
    /** Optional code `wx.login` hands out instead of the simulator's. */
    this.loginCode = null;
    /** Codes `wx.login` hands out first, one per call, before asking the simulator. */
    this.loginCodes = [];
  }

  login({ success, fail }) {
    this.logins += 1;
    const run = async () => {
      if (this.loginCodes && this.loginCodes.length) return { code: this.loginCodes.shift() };
      if (this.loginCode) return { code: this.loginCode };
      const answer = await postJson(`${this.service.simUrl}/device/users/${this.simUser.id}/login`, { appid: this.appid });
      if (answer.status !== 200) throw new Error(JSON.stringify(answer.body));
      this.sessionAlive = true;
      return { code: answer.body.code };
    };
    run().then(
      ({ code }) => success({ errMsg: 'login:ok', code }),
      (e) => fail({ errMsg: `login:fail ${e.message}` }),
    );
  }

  checkSession({ success, fail }) {
    setImmediate(() => (this.sessionAlive ? success({ errMsg: 'checkSession:ok' }) : fail({ errMsg: 'checkSession:fail session time out' })));
  }

  request(options) {
    const { url, method = 'GET', data, header = {}, success, fail } = options;
    this.requests.push({ method, url: url.replace(this.service.baseUrl, ''), header: { ...header } });
    const run = async () => {
      const intercepted = this.intercept && this.intercept(options);
      if (intercepted) return intercepted;
      let target = url;
      let body;
      if (method === 'GET' || method === 'DELETE') {
        if (data && typeof data === 'object' && Object.keys(data).length) {
          target += (url.includes('?') ? '&' : '?') + new URLSearchParams(data);
        }
      } else if (data !== undefined) {
        body = typeof data === 'string' ? data : JSON.stringify(data);
      }
      const response = await fetch(target, { method, headers: header, body });
      const text = await response.text();
      let parsed = text;
      if (options.dataType !== 'text' && text) {
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = text;
        }
      }
      return { statusCode: response.status, data: parsed, header: Object.fromEntries(response.headers), errMsg: 'request:ok' };
    };
    run().then(success, (e) => fail({ errMsg: `request:fail ${e.cause ? e.cause.code : e.message}` }));
    return { abort() {} };
  }

  getStorageSync(key) {
    return this.storage.has(key) ? structuredClone(this.storage.get(key)) : '';
  }

  setStorageSync(key, value) {
    this.storage.set(key, structuredClone(value));
  }

  removeStorageSync(key) {
    this.storage.delete(key);
  }

  // What WeChat hands the page when the user taps the buttons.

  /** `bindgetphonenumber` after the user allowed: the current flow's one-time code. */
  async phoneCodeEvent() {
    const bundle = await this.#devicePhone();
    return { type: 'getphonenumber', detail: { errMsg: 'getPhoneNumber:ok', code: bundle.code } };
  }

  /** `bindgetphonenumber` on an old base library: encryptedData + iv. */
  async legacyPhoneEvent() {
    const bundle = await this.#devicePhone();
    return { type: 'getphonenumber', detail: { errMsg: 'getPhoneNumber:ok', encryptedData: bundle.encryptedData, iv: bundle.iv } };
  }

  /** `bindgetphonenumber` after the user declined. */
  declinedPhoneEvent() {
    return { type: 'getphonenumber', detail: { errMsg: 'getPhoneNumber:fail user deny' } };
  }

  /** The legacy `getUserInfo` result. */
  async userInfoDetail() {
    const answer = await postJson(`${this.service.simUrl}/device/users/${this.simUser.id}/user-info`, { appid: this.appid });
    if (answer.status !== 200) throw new Error(JSON.stringify(answer.body));
    return { errMsg: 'getUserInfo:ok', ...answer.body };
  }

  async #devicePhone() {
    const answer = await postJson(`${this.service.simUrl}/device/users/${this.simUser.id}/phone`, { appid: this.appid });
    if (answer.status !== 200) throw new Error(JSON.stringify(answer.body));
    return answer.body;
  }

  /** The requests made so far, as `METHOD /path`. */
  calls() {
    return this.requests.map((r) => `${r.method} ${r.url}`);
  }
}
