// Spike on POST /predict: the seeds' 10 users, a ramp to 4x (40) in 10 s and back down in 10 s, then 10 users
// again. Reports the 503s the spike caused and the recovery time: seconds from the end of the spike (load back
// at the baseline) until p95 latency and the error rate are back to their baseline and stay there.
//
// Traffic is the seeds' profile (95% one repeated batch, 5% new texts). Time is cut into windows of WINDOW_S
// seconds; a window is back to baseline when its p95 is at most TOLERANCE times the worst baseline window's p95
// and its error rate at most the worst baseline window's plus one point. (The worst, not the median: at the
// seeds' graded pace a window holds a few dozen requests, and its p95 is nearly its slowest request.)
//
// Env: BASE_URL (default http://127.0.0.1:8000), VUS (baseline users, default 10; the peak is 4x), BASELINE
// (default 30s), RAMP (default 10s, each way), HOLD (at the peak, default 0s), RECOVERY (default 30s), WINDOW_S
// (default 2), TOLERANCE (default 1.2), THINK_S (seconds between a user's requests, default 0), RUN_SALT,
// SUMMARY_JSON (also write the report there as JSON), API_KEY (sent as X-API-Key; a server that refuses it, or asks
// for one, stops the run at once).
// HTML report: K6_WEB_DASHBOARD=true K6_WEB_DASHBOARD_EXPORT=load/results/spike.html k6 run load/spike.js
// (add K6_WEB_DASHBOARD_PORT=-1 where nobody opens the live dashboard, e.g. CI).
import http from 'k6/http';
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import { checkKey, withKey } from './keys.js';
import { isPredictionBody, runSalt, uniqueText } from './texts.js';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8000';
const SALT = runSalt();
const VUS = Number(__ENV.VUS || 10);
const PEAK = 4 * VUS;
const THINK_S = Number(__ENV.THINK_S || 0);
const WINDOW_S = Number(__ENV.WINDOW_S || 2);
const TOLERANCE = Number(__ENV.TOLERANCE || 1.2);
const FIXED_BATCH = ['I love you!', 'I hate you!', 'I am a Kubernetes Cluster!'];

function seconds(value, fallback) {
  const text = String(value || fallback);
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text);
  if (!match) {
    throw new Error(`not a duration: ${text}`);
  }
  const scale = { ms: 0.001, s: 1, m: 60 }[match[2] || 's'];
  return Number(match[1]) * scale;
}

const BASELINE_S = seconds(__ENV.BASELINE, '30s');
const RAMP_S = seconds(__ENV.RAMP, '10s');
const HOLD_S = seconds(__ENV.HOLD, '0s');
const RECOVERY_S = seconds(__ENV.RECOVERY, '30s');
const SPIKE_START_S = BASELINE_S;
const SPIKE_END_S = BASELINE_S + 2 * RAMP_S + HOLD_S;
const TOTAL_S = SPIKE_END_S + RECOVERY_S;
const WINDOWS = Math.ceil(TOTAL_S / WINDOW_S) + 1;

const shed = new Counter('shed_503');

// A threshold that always passes makes k6 keep the per-window and per-phase submetrics for the summary.
const thresholds = {
  checks: ['rate>0.99'],
  'shed_503{phase:baseline}': ['count>=0'],
  'shed_503{phase:spike}': ['count>=0'],
  'shed_503{phase:recovery}': ['count>=0'],
};
for (let w = 0; w < WINDOWS; w += 1) {
  thresholds[`http_req_duration{window:${w}}`] = ['p(95)>=0'];
  thresholds[`http_req_failed{window:${w}}`] = ['rate>=0'];
}

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-vus',
      startVUs: VUS,
      stages: [
        { duration: `${BASELINE_S}s`, target: VUS },
        { duration: `${RAMP_S}s`, target: PEAK },
        { duration: `${HOLD_S}s`, target: PEAK },
        { duration: `${RAMP_S}s`, target: VUS },
        { duration: `${RECOVERY_S}s`, target: VUS },
      ],
      gracefulRampDown: '5s',
    },
  },
  thresholds,
};

function phase(elapsed) {
  if (elapsed < SPIKE_START_S) {
    return 'baseline';
  }
  return elapsed < SPIKE_END_S ? 'spike' : 'recovery';
}

// One request before the load: a refused key would fail every request, so end the run saying why.
export function setup() {
  checkKey(`${BASE_URL}/predict`, { text: FIXED_BATCH });
}

export default function () {
  const elapsed = (Date.now() - exec.scenario.startTime) / 1000;
  const tags = { window: String(Math.floor(elapsed / WINDOW_S)), phase: phase(elapsed) };
  const texts = Math.random() < 0.95
    ? FIXED_BATCH
    : FIXED_BATCH.map((_, slot) => uniqueText(SALT, exec.vu.idInTest, exec.vu.iterationInScenario, slot));
  const res = http.post(`${BASE_URL}/predict`, JSON.stringify({ text: texts }), {
    headers: withKey({ 'Content-Type': 'application/json' }),
    timeout: '60s',
    tags,
  });
  if (res.status === 503) {
    shed.add(1, { phase: tags.phase });
  }
  // Shedding with 503 and Retry-After is the server protecting itself, not a wrong answer.
  check(res, {
    'answered or shed': (r) => (r.status === 200 && isPredictionBody(r.body, texts.length))
      || (r.status === 503 && r.headers['Retry-After'] !== undefined),
  });
  if (THINK_S > 0) {
    sleep(THINK_S);
  }
}

function worst(values) {
  return values.length ? Math.max(...values) : null;
}

function windowStats(data) {
  const out = [];
  for (let w = 0; w < WINDOWS; w += 1) {
    const duration = data.metrics[`http_req_duration{window:${w}}`];
    const failed = data.metrics[`http_req_failed{window:${w}}`];
    const requests = failed ? failed.values.passes + failed.values.fails : 0;
    if (requests > 0) {
      out.push({ window: w, start_s: w * WINDOW_S, requests, p95_ms: duration.values['p(95)'], error_rate: failed.values.rate });
    }
  }
  return out;
}

// Exported for reuse: the report from k6's end-of-test data.
export function spikeReport(data) {
  const windows = windowStats(data);
  // The first window warms up connections; baseline windows end where the spike starts.
  const baseline = windows.filter((w) => w.window > 0 && w.start_s + WINDOW_S <= SPIKE_START_S);
  const baseP95 = worst(baseline.map((w) => w.p95_ms));
  const baseErrors = worst(baseline.map((w) => w.error_rate));
  const healthy = (w) => baseP95 !== null && w.p95_ms <= baseP95 * TOLERANCE && w.error_rate <= baseErrors + 0.01;
  // Windows after the spike, without a last partial one (a few requests while k6 stops).
  const after = windows.filter((w) => w.start_s + WINDOW_S > SPIKE_END_S && w.start_s + WINDOW_S <= TOTAL_S);
  let recoveredAt = null;
  for (let i = after.length - 1; i >= 0 && healthy(after[i]); i -= 1) {
    recoveredAt = after[i].start_s;
  }
  const count = (name) => (data.metrics[name] ? data.metrics[name].values.count : 0);
  return {
    baseline_users: VUS,
    peak_users: PEAK,
    spike_start_s: SPIKE_START_S,
    spike_end_s: SPIKE_END_S,
    window_s: WINDOW_S,
    requests: data.metrics.http_reqs ? data.metrics.http_reqs.values.count : 0,
    shed_503: {
      baseline: count('shed_503{phase:baseline}'),
      spike: count('shed_503{phase:spike}'),
      recovery: count('shed_503{phase:recovery}'),
    },
    baseline_p95_ms: baseP95,
    baseline_error_rate: baseErrors,
    // null: p95 or errors were still above baseline at the end of the recovery phase.
    recovery_s: recoveredAt === null ? null : Math.max(0, recoveredAt - SPIKE_END_S),
    windows,
  };
}

export function handleSummary(data) {
  const report = spikeReport(data);
  const fmt = (v, digits) => (v === null ? 'n/a' : v.toFixed(digits));
  const lines = [
    `spike ${report.baseline_users} -> ${report.peak_users} users: ${report.requests} requests`,
    `503s: ${report.shed_503.baseline} before, ${report.shed_503.spike} during, ${report.shed_503.recovery} after the spike`,
    `baseline (worst window) p95 ${fmt(report.baseline_p95_ms, 1)} ms, errors ${fmt(report.baseline_error_rate === null ? null : 100 * report.baseline_error_rate, 2)}%`,
    `recovery: ${report.recovery_s === null ? 'not back to baseline by the end of the run' : `${report.recovery_s} s after the spike ended`}`,
  ];
  const out = { stdout: `${lines.join('\n')}\n` };
  if (__ENV.SUMMARY_JSON) {
    out[__ENV.SUMMARY_JSON] = JSON.stringify(report, null, 2);
  }
  return out;
}
