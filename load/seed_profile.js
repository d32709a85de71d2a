// The seeds' graded load on POST /predict: 10 users with no think time, 95% of requests one fixed batch.
//
// As the course's k6 script graded the seed projects: each of 10 users sends its next request as soon as the
// last one is answered; 95% of requests carry one fixed 3-text batch, 5% a shuffled subset of a fixed pool of
// ten texts. MIX picks the variant:
//   graded (default)  as above;
//   unseen            the 5% carry three texts never sent before, so they always miss every cache;
//   fixed             every request is the fixed batch (a fully cached load, to measure the hit path).
// Env: BASE_URL (default http://127.0.0.1:8000), VUS (default 10), DURATION (default 20s), MIX,
// RUN_SALT (optional, 0-99), THINK_S (seconds each user waits between requests; default 0, as graded),
// API_KEY (sent as X-API-Key when set; a server that refuses it, or asks for one, stops the run at once).
import http from 'k6/http';
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { checkKey, withKey } from './keys.js';
import { isPredictionBody, runSalt, uniqueText } from './texts.js';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8000';
const SALT = runSalt();
const REPEAT_SHARE = 0.95;
const THINK_S = Number(__ENV.THINK_S || 0);
const MIX = __ENV.MIX || 'graded';
const HEADERS = withKey({ 'Content-Type': 'application/json' });
const FIXED_BATCH = ['I love you!', 'I hate you!', 'I am a Kubernetes Cluster!'];
const POOL = [
  'The movie was a delight from start to finish.',
  'I would not watch this again if you paid me.',
  'The service was slow but the food was excellent.',
  'What a waste of a perfectly good evening.',
  'Absolutely brilliant performances all around.',
  'The plot made no sense and the ending was worse.',
  'A charming little film with a big heart.',
  'I fell asleep halfway through.',
  'The soundtrack alone is worth the ticket.',
  'Not great, not terrible, just forgettable.',
];

if (!['graded', 'unseen', 'fixed'].includes(MIX)) {
  throw new Error('MIX must be graded, unseen or fixed');
}

export const options = {
  vus: Number(__ENV.VUS || 10),
  duration: __ENV.DURATION || '20s',
  thresholds: {
    checks: ['rate>0.99'],
    http_req_failed: ['rate<0.01'],
  },
};

// A random non-empty subset of the pool in random order (Fisher-Yates, then a random length).
function shuffledSubset() {
  const texts = POOL.slice();
  for (let i = texts.length - 1; i > 0; i -= 1) {
    const j = Math.floor(Math.random() * (i + 1));
    [texts[i], texts[j]] = [texts[j], texts[i]];
  }
  return texts.slice(0, 1 + Math.floor(Math.random() * texts.length));
}

function unseenBatch() {
  const vu = exec.vu.idInTest;
  const iter = exec.vu.iterationInScenario;
  return FIXED_BATCH.map((_, slot) => uniqueText(SALT, vu, iter, slot));
}

function nextBatch() {
  if (MIX === 'fixed' || Math.random() < REPEAT_SHARE) {
    return FIXED_BATCH;
  }
  return MIX === 'unseen' ? unseenBatch() : shuffledSubset();
}

// One request before the load: a refused key (401/403) would fail every request, so end the run saying why.
export function setup() {
  checkKey(`${BASE_URL}/predict`, { text: FIXED_BATCH });
}

export default function () {
  const texts = nextBatch();
  const res = http.post(`${BASE_URL}/predict`, JSON.stringify({ text: texts }), {
    headers: HEADERS,
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
