// `wx.request` as WeChat documents it (developers.weixin.qq.com, wx.request), over
// Node's fetch, for running a mini program's network code outside WeChat:
//
// * `header['content-type']` defaults to `application/json`;
// * GET (and HEAD, DELETE) data that is an object becomes a query string of
//   `encodeURIComponent(key)=encodeURIComponent(value)` pairs;
// * POST data that is an object is JSON-serialised under `application/json`, and
//   becomes a query string under `application/x-www-form-urlencoded`; a string is sent
//   as it is;
// * `dataType: 'json'` (the default) parses the answer as JSON when it can;
// * `success` gets `{ data, statusCode, header, errMsg: 'request:ok' }` whatever the
//   status; `fail` only for network failures; `complete` after either.
//
// Every request is recorded (`requests`) with the bytes that went on the wire.

const QUERY_METHODS = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS']);

function queryString(object) {
  return Object.keys(object)
    .map((key) => `${encodeURIComponent(key)}=${encodeURIComponent(object[key])}`)
    .join('&');
}

function headerValue(header, name) {
  const key = Object.keys(header).find((k) => k.toLowerCase() === name);
  return key === undefined ? undefined : header[key];
}

export function createWx() {
  const requests = [];
  function request(options) {
    const method = (options.method || 'GET').toUpperCase();
    const header = { ...(options.header || {}) };
    if (headerValue(header, 'content-type') === undefined) header['content-type'] = 'application/json';
    const contentType = String(headerValue(header, 'content-type')).toLowerCase();
    const data = options.data;
    let url = options.url;
    let body;
    if (QUERY_METHODS.has(method)) {
      const query = data && typeof data === 'object' ? queryString(data) : data ? String(data) : '';
      if (query) url += (url.includes('?') ? '&' : '?') + query;
    } else if (typeof data === 'string' || data instanceof ArrayBuffer) {
      body = data;
    } else if (data && typeof data === 'object') {
      body = contentType.startsWith('application/x-www-form-urlencoded') ? queryString(data) : JSON.stringify(data);
    }
    const record = { method, url, header, body };
    requests.push(record);
    const run = async () => {
      const response = await fetch(url, { method, headers: header, body });
      const text = await response.text();
      let parsed = text;
      if ((options.dataType || 'json') === 'json') {
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = text;
        }
      }
      record.statusCode = response.status;
      return { data: parsed, statusCode: response.status, header: Object.fromEntries(response.headers), errMsg: 'request:ok' };
    };
    run().then(
      (result) => {
        if (options.success) options.success(result);
        if (options.complete) options.complete(result);
      },
      (error) => {
        const result = { errMsg: `request:fail ${error.message}` };
        if (options.fail) options.fail(result);
        if (options.complete) options.complete(result);
      },
    );
    return { abort() {} };
  }
  return { request, requests };
}
