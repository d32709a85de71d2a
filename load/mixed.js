// Mixed traffic for watching the dashboard: repeated /predict batches (cache hits), batches of new texts (misses),
// /query, and now and then an invalid body (422). A full queue's 503 (with Retry-After) counts as answered.
//
// Env: BASE_URL (default http://127.0.0.1:8000), VUS (default 10), DURATION (default 20s), NEW_SHARE (share of
// /predict and /query requests with never-seen texts, default 0.2), BATCH (texts per /predict, 1-8, default 3),
// RUN_SALT (optional, 0-99), API_KEY (sent as X-API-Key; a server that refuses it, or asks for one, stops the
// run at once).
// HTML report: K6_WEB_DASHBOARD=true K6_WEB_DASHBOARD_EXPORT=load/results/mixed.html k6 run load/mixed.js
// (add K6_WEB_DASHBOARD_PORT=-1 where nobody opens the live dashboard, e.g. CI).
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import { checkKey, withKey } from './keys.js';
import { isPredictionBody, runSalt, uniqueText } from './texts.js';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8000';
const SALT = runSalt();
const NEW_SHARE = Number(__ENV.NEW_SHARE || 0.2);
const BATCH = Number(__ENV.BATCH || 3);
const FIXED = ['I love you!', 'I hate you!', 'I am a Kubernetes Cluster!', 'feeling like a million bucks'];
const LABELS = ['happy', 'sad', 'rich'];

const shed = new Counter('shed_503');

export const options = {
  vus: Number(__ENV.VUS || 10),
  duration: __ENV.DURATION || '20s',
  thresholds: {
    checks: ['rate>0.99'],
  },
};

function texts(count, slot0) {
  if (Math.random() >= NEW_SHARE) {
    return Array.from({ length: count }, (_, i) => FIXED[i % FIXED.length]);
  }
  const vu = exec.vu.idInTest;
  const iter = exec.vu.iterationInScenario;
  return Array.from({ length: count }, (_, i) => uniqueText(SALT, vu, iter, slot0 + i));
}

function isQueryBody(body) {
  try {
    return LABELS.includes(JSON.parse(body).label);
  } catch (e) {
    return false;
  }
}

function answered(res, valid) {
  if (res.status === 503) {
    shed.add(1);
    return res.headers['Retry-After'] !== undefined;
  }
  return res.status === 200 && valid(res.body);
}

// One request before the load: a refused key would fail every request, so end the run saying why.
export function setup() {
  checkKey(`${BASE_URL}/predict`, { text: FIXED.slice(0, 1) });
}

export default function () {
  const roll = Math.random();
  if (roll < 0.05) {
    // A misspelt field: the 422 a client gets for a malformed request.
    const res = http.post(`${BASE_URL}/predict`, JSON.stringify({ txt: ['a typo in the field name'] }), {
      headers: withKey({}),
    });
    check(res, { 'invalid body is 422': (r) => r.status === 422 });
  } else if (roll < 0.35) {
    // k6 sends JSON without a Content-Type unless told; the server takes it as JSON.
    const [sentence] = texts(1, 0);
    const res = http.post(`${BASE_URL}/query`, JSON.stringify({ sentence, labels: LABELS }), {
      headers: withKey({}),
      timeout: '60s',
    });
    check(res, { 'query answered': (r) => answered(r, isQueryBody) });
  } else {
    const batch = texts(BATCH, 0);
    const res = http.post(`${BASE_URL}/predict`, JSON.stringify({ text: batch }), {
      headers: withKey({ 'Content-Type': 'application/json' }),
      timeout: '60s',
    });
    check(res, { 'predict answered': (r) => answered(r, (body) => isPredictionBody(body, batch.length)) });
  }
}
