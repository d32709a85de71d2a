// Uncached load on POST /predict: every request carries one text no earlier request sent.
//
// Measures raw model throughput and latency: with unique texts no cache can answer.
// Env: BASE_URL (default http://127.0.0.1:8000), VUS (default 1), DURATION (default 20s),
// RUN_SALT (optional, 0-99), LENGTH (short: 5-15 words, the default; long: 25-40 tokens), API_KEY (sent as
// X-API-Key; a server that refuses it, or asks for one, stops the run at once), API (mlapi, the default, or
// infinity: infinity-emb's POST /classify).
// Run: k6 run -e BASE_URL=... -e API_KEY=... -e VUS=4 load/predict_unique.js
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { checkKey, withKey } from './keys.js';
import { fillerRange, isPredictionBody, predictRequest, runSalt, uniqueText } from './texts.js';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8000';
const SALT = runSalt();
const RANGE = fillerRange();

export const options = {
  vus: Number(__ENV.VUS || 1),
  duration: __ENV.DURATION || '20s',
  thresholds: {
    checks: ['rate>0.99'],
    http_req_failed: ['rate<0.01'],
  },
};

// One request before the load (a text the run never sends): a refused key ends the run at once, saying why.
export function setup() {
  const request = predictRequest(['api key check']);
  checkKey(`${BASE_URL}${request.path}`, JSON.parse(request.body));
}

export default function () {
  const text = uniqueText(SALT, exec.vu.idInTest, exec.vu.iterationInScenario, 0, RANGE);
  const request = predictRequest([text]);
  const res = http.post(`${BASE_URL}${request.path}`, request.body, {
    headers: withKey({ 'Content-Type': 'application/json' }),
    timeout: '60s',
  });
  check(res, {
    'status is 200': (r) => r.status === 200,
    'one prediction list': (r) => isPredictionBody(r.body, 1),
  });
}
