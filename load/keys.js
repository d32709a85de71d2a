// The API key the k6 scripts send, and the check that ends a run at once when the server refuses it.
//
// Every stack requires keys. API_KEY (env) is sent as X-API-Key on every request; without a key the server
// accepts, every request of a run would be a 401 or 403. Each script's setup() calls checkKey() first: one request,
// and on 401/403 the run stops with a message that says which status came back and what to set.
import http from 'k6/http';
import exec from 'k6/execution';

export const API_KEY = __ENV.API_KEY || '';

// `extra` plus X-API-Key when API_KEY is set (pass {} to send JSON without a Content-Type, as k6 does by default).
export function withKey(extra) {
  return API_KEY ? Object.assign({}, extra, { 'X-API-Key': API_KEY }) : Object.assign({}, extra);
}

// POST one valid request to `url`; abort the whole run if the server refuses the key.
export function checkKey(url, body) {
  const res = http.post(url, JSON.stringify(body), {
    headers: withKey({ 'Content-Type': 'application/json' }),
    timeout: '60s',
    tags: { name: 'api key check' },
  });
  if (res.status === 401 || res.status === 403) {
    const fix = API_KEY
      ? 'API_KEY is set but the server does not accept it: set API_KEY to a key the server accepts'
      : 'the server requires an API key: run with -e API_KEY=<key> (sent as X-API-Key)';
    exec.test.abort(`${url} answered ${res.status}: ${fix}`);
  }
}
