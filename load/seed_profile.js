// The seeds' load profile on POST /predict: 10 users; 95% of requests repeat one fixed batch, 5% are new.
//
// This is the mix the seed projects graded themselves on (a 95% cache rate at 10 users). The new
// requests send a batch of the same size whose texts were never sent before, so they miss any cache.
// Env: BASE_URL (default http://127.0.0.1:8000), DURATION (default 20s), RUN_SALT (optional, 0-99),
// THINK_S (seconds each user waits between requests; default 0 = flat out, 1 = the seeds' graded pace).
import http from 'k6/http';
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { isPredictionBody, runSalt, uniqueText } from './texts.js';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8000';
const SALT = runSalt();
const REPEAT_SHARE = 0.95;
const THINK_S = Number(__ENV.THINK_S || 0);
const FIXED_BATCH = ['I love you!', 'I hate you!', 'I am a Kubernetes Cluster!'];

export const options = {
  vus: 10,
  duration: __ENV.DURATION || '20s',
  thresholds: {
    checks: ['rate>0.99'],
    http_req_failed: ['rate<0.01'],
  },
};

function newBatch() {
  const vu = exec.vu.idInTest;
  const iter = exec.vu.iterationInScenario;
  return FIXED_BATCH.map((_, slot) => uniqueText(SALT, vu, iter, slot));
}

export default function () {
  const texts = Math.random() < REPEAT_SHARE ? FIXED_BATCH : newBatch();
  const res = http.post(`${BASE_URL}/predict`, JSON.stringify({ text: texts }), {
    headers: { 'Content-Type': 'application/json' },
    timeout: '60s',
  });
  check(res, {
    'status is 200': (r) => r.status === 200,
    'one prediction list per text': (r) => isPredictionBody(r.body, texts.length),
  });
  if (THINK_S > 0) {
    sleep(THINK_S);
  }
}
