// The comparison page: sends the same texts to every loaded backend and shows the answers side by side.
// Plain script, no framework and no build step; it talks only to the server that served it (relative URLs
// resolved against <base href>, which the server sets to its path prefix).
"use strict";

(() => {
  const KEY_STORAGE = "mlapi-api-key";
  const HISTORY_SIZE = 20;
  const STATUS_WORDS = {
    400: "The model cannot answer this",
    401: "Not authorised: this server needs an API key (enter it above)",
    403: "Forbidden: the API key was refused",
    404: "Not found",
    413: "Request too large",
    422: "Invalid input",
    429: "Too many requests: rate limit reached",
    500: "Server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
  };

  const $ = (selector) => document.querySelector(selector);
  // "" stands for the server's default backend until /health names the loaded ones (it may be refused or down).
  const state = { backends: [""], task: null, precision: {}, history: [], busy: false };
  const shown = (backend) => backend || "default";

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  const apiKey = () => $("#api-key").value.trim();

  function headers(json) {
    const h = {};
    if (json) h["Content-Type"] = "application/json";
    if (apiKey()) h["X-API-Key"] = apiKey();
    return h;
  }

  const pct = (score) => `${(score * 100).toFixed(1)}%`;
  const ms = (value) => (value == null ? "–" : `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`);

  // `app;dur=4.2` (the server's own time for the request, see request_stats.py) -> 4.2
  function serverMs(response) {
    const match = /(?:^|,)\s*app;(?:[^,]*;)?\s*dur=([\d.]+)/.exec(response.headers.get("Server-Timing") || "");
    return match ? Number(match[1]) : null;
  }

  // An error answer in words: what the status means, and the server's reason.
  function describeError(status, body, retryAfter) {
    const words = STATUS_WORDS[status] || `HTTP ${status}`;
    let reason = "";
    if (body && typeof body === "object") {
      if (typeof body.error === "string") reason = body.error;
      else if (typeof body.detail === "string") reason = body.detail;
      else if (Array.isArray(body.detail)) {
        reason = body.detail
          .map((d) => {
            const where = d.field || (Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "");
            return `${where ? `${where}: ` : ""}${d.reason || d.msg || ""}`;
          })
          .join("; ");
      }
    } else if (typeof body === "string") {
      reason = body.trim().slice(0, 300);
    }
    let text = `${status} ${words}`;
    if (reason) text += ` — ${reason}`;
    if (retryAfter) text += ` (retry after ${retryAfter} s)`;
    return text;
  }

  async function call(method, path, body) {
    const started = performance.now();
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (err) {
      return { ok: false, status: 0, message: `Could not reach the server (${err.message})` };
    }
    const raw = await response.text();
    const browserMs = performance.now() - started;
    let data = raw;
    try {
      data = raw ? JSON.parse(raw) : null;
    } catch {
      // not JSON (a proxy's error page): shown as text
    }
    const result = { ok: response.ok, status: response.status, data, browserMs, serverMs: serverMs(response) };
    if (!response.ok) {
      result.message = describeError(response.status, data, response.headers.get("Retry-After"));
    }
    const hits = response.headers.get("X-Cache-Hits");
    if (hits !== null) {
      result.cache = {
        hits: Number(hits),
        misses: Number(response.headers.get("X-Cache-Misses")),
        texts: (response.headers.get("X-Cache-Texts") || "").split(",").filter(Boolean),
      };
    }
    return result;
  }

  function showErrors(messages) {
    const box = $("#errors");
    box.replaceChildren(...messages.map((m) => el("p", { text: m })));
    box.hidden = messages.length === 0;
  }

  function setFact(name, value) {
    const node = document.querySelector(`[data-fact="${name}"]`);
    node.textContent = value;
    node.title = value;
  }

  // Model facts and loaded backends from /health; polls while the model loads.
  async function loadHealth() {
    const result = await call("GET", "health");
    const data = result.data && typeof result.data === "object" ? result.data : {};
    const model = data.model || {};
    if (result.ok || result.status === 503) {
      setFact("source", model.source || "–");
      setFact("revision", model.revision || "not pinned");
      setFact("task", model.task || "–");
      state.precision = model.precision || {};
      setFact("precision", Object.entries(state.precision).map(([b, p]) => `${b} ${p}`).join(" · ") || "–");
      const cache = data.cache || {};
      setFact("cache", cache.backend ? `${cache.backend}${cache.healthy === false ? " (unreachable)" : ""}` : "–");
      setFact("status", data.status || "–");
    }
    if (!result.ok) {
      setFact("status", result.status === 503 ? data.status || "unavailable" : `error ${result.status}`);
      if (result.status === 503 && data.status === "loading") {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        return loadHealth();
      }
      // A model that failed to load says why in /health's model.error.
      const message = model.error ? describeError(result.status, { error: model.error }) : result.message;
      showErrors([`health: ${message}`]);
      return false;
    }
    state.backends = data.backends && data.backends.length ? data.backends : ["onnx"];
    state.task = model.task || null;
    const canQuery = state.task === "sentence-embedding";
    $("#mode-query").disabled = !canQuery;
    $("#query-unavailable").hidden = canQuery;
    return true;
  }

  function bars(scores) {
    return el(
      "ul",
      { class: "bars" },
      ...scores.map((s) => {
        const fill = el("span", { class: "fill" });
        fill.style.width = `${Math.max(0, Math.min(1, s.score)) * 100}%`;
        return el(
          "li",
          { "data-label": s.label },
          el("span", { class: "bar-label", text: s.label }),
          el("span", { class: "bar", "aria-hidden": "true" }, fill),
          el("span", { class: "bar-score", text: s.score.toFixed(4) }),
        );
      }),
    );
  }

  function backendCard(backend, result, items) {
    const precision = state.precision[backend];
    const card = el(
      "article",
      { class: "backend", "data-backend": shown(backend) },
      el("h2", {}, shown(backend), precision ? el("span", { class: "precision", text: precision }) : null),
    );
    if (!result.ok) {
      card.append(el("p", { class: "card-error", "data-role": "error", text: result.message }));
      return card;
    }
    const cache = result.cache;
    card.append(
      el(
        "p",
        { class: "timing" },
        "server ",
        el("b", { "data-role": "server-ms", text: ms(result.serverMs) }),
        " · browser ",
        el("b", { "data-role": "browser-ms", text: ms(result.browserMs) }),
        cache ? ` · cache ${cache.hits} hit${cache.hits === 1 ? "" : "s"}, ${cache.misses} miss${cache.misses === 1 ? "" : "es"}` : null,
      ),
    );
    card.append(el("ol", { class: "items" }, ...items));
    return card;
  }

  function itemHead(text, label, cacheState) {
    return el(
      "p",
      { class: "item-head" },
      el("q", { class: "item-text", text: text === "" ? "(blank)" : text }),
      el("span", { class: "label", "data-role": "label", text: label }),
      cacheState ? el("span", { class: `cache cache-${cacheState}`, "data-role": "cache", text: cacheState }) : null,
    );
  }

  function renderDisagreement(rows, backends) {
    const note = $("#disagreement");
    const differing = rows.filter((row) => new Set(backends.map((b) => row[b] && row[b].label)).size > 1);
    if (backends.length < 2 || differing.length === 0) {
      note.hidden = true;
      note.textContent = "";
      return;
    }
    const details = differing.map(
      (row) => `“${row.text}”: ${backends.map((b) => `${shown(b)} says ${row[b].label} (${pct(row[b].score)})`).join(", ")}`,
    );
    note.textContent =
      `The backends disagree on ${differing.length} of ${rows.length} text${rows.length === 1 ? "" : "s"}. ` +
      details.join("; ") +
      ".";
    note.hidden = false;
  }

  function renderHistoryHead() {
    const row = $("#history thead tr");
    row.replaceChildren(el("th", { scope: "col", text: "Text" }));
    for (const b of state.backends) row.append(el("th", { scope: "col", text: shown(b) }));
  }

  function addHistory(rows, timings) {
    for (const row of rows) {
      state.history.unshift({ ...row, timings });
    }
    state.history.length = Math.min(state.history.length, HISTORY_SIZE);
    const body = $("#history tbody");
    body.replaceChildren(
      ...state.history.map((entry) =>
        el(
          "tr",
          {},
          el("th", { scope: "row", text: entry.text === "" ? "(blank)" : entry.text }),
          ...state.backends.map((b) =>
            el(
              "td",
              { "data-backend": shown(b) },
              entry[b]
                ? el(
                    "span",
                    {},
                    el("b", { text: entry[b].label }),
                    ` ${entry[b].score.toFixed(3)} `,
                    el("span", { class: "ms", text: ms(entry.timings[b]) }),
                  )
                : el("span", { class: "hint", text: "error" }),
            ),
          ),
        ),
      ),
    );
    $("#history-empty").hidden = state.history.length > 0;
  }

  // Runs the same request on each backend in turn (not at once, so one backend's pass does not slow the other's).
  async function compare(path, body, render) {
    if (state.busy) return;
    state.busy = true;
    document.body.classList.add("busy");
    for (const button of document.querySelectorAll("button[type=submit]")) button.disabled = true;
    const results = {};
    try {
      for (const backend of state.backends) {
        const url = backend ? `${path}?backend=${encodeURIComponent(backend)}` : path;
        results[backend] = await call("POST", url, body);
      }
    } finally {
      state.busy = false;
      document.body.classList.remove("busy");
      for (const button of document.querySelectorAll("button[type=submit]")) button.disabled = false;
    }
    // One line per distinct error, naming the backends that gave it.
    const failed = new Map();
    for (const b of state.backends.filter((name) => !results[name].ok)) {
      failed.set(results[b].message, [...(failed.get(results[b].message) || []), shown(b)]);
    }
    showErrors([...failed].map(([message, names]) => `${names.join(", ")}: ${message}`));
    render(results);
  }

  function runPredict(texts) {
    return compare("predict", { text: texts }, (results) => {
      const rows = texts.map((text) => ({ text }));
      const cards = state.backends.map((backend) => {
        const result = results[backend];
        const predictions = result.ok && result.data ? result.data.predictions : [];
        const items = predictions.map((scores, i) => {
          rows[i][backend] = scores[0];
          const cacheState = result.cache ? result.cache.texts[i] : null;
          return el("li", { class: "item", "data-index": String(i) }, itemHead(texts[i], scores[0].label, cacheState), bars(scores));
        });
        return backendCard(backend, result, items);
      });
      $("#results").replaceChildren(...cards);
      const answered = state.backends.filter((b) => results[b].ok);
      renderDisagreement(rows, answered);
      if (answered.length) {
        addHistory(rows.filter((row) => answered.some((b) => row[b])), Object.fromEntries(answered.map((b) => [b, results[b].serverMs])));
      }
    });
  }

  // /query looks up the sentence and every label: all found, none found, or some.
  function queryCacheState(cache) {
    if (!cache) return null;
    if (cache.misses === 0) return "hit";
    return cache.hits === 0 ? "miss" : "partial";
  }

  function runQuery(sentence, labels) {
    return compare("query", { sentence, labels }, (results) => {
      const row = { text: `${sentence} → ${labels.join(", ")}` };
      const cards = state.backends.map((backend) => {
        const result = results[backend];
        if (!result.ok) return backendCard(backend, result, []);
        row[backend] = result.data.scores[0];
        const cacheState = queryCacheState(result.cache);
        const item = el("li", { class: "item", "data-index": "0" }, itemHead(sentence, result.data.label, cacheState), bars(result.data.scores));
        return backendCard(backend, result, [item]);
      });
      $("#results").replaceChildren(...cards);
      const answered = state.backends.filter((b) => results[b].ok);
      renderDisagreement([row], answered);
      if (answered.length) addHistory([row], Object.fromEntries(answered.map((b) => [b, results[b].serverMs])));
    });
  }

  function textsFromBox() {
    const lines = $("#texts").value.split("\n").map((line) => line.trim());
    return lines.filter((line) => line !== "");
  }

  // The address reproduces the comparison: ?text=a&text=b, or ?sentence=...&labels=a,b for /query.
  function remember(params) {
    const url = new URL(window.location.href);
    url.search = params.toString();
    window.history.replaceState(null, "", url);
  }

  function submitPredict(event) {
    if (event) event.preventDefault();
    const texts = textsFromBox();
    if (texts.length === 0) {
      showErrors(["Type at least one text (one per line)."]);
      return Promise.resolve();
    }
    const params = new URLSearchParams();
    for (const t of texts) params.append("text", t);
    remember(params);
    return runPredict(texts);
  }

  function submitQuery(event) {
    if (event) event.preventDefault();
    const sentence = $("#sentence").value.trim();
    const labels = $("#labels").value.split(",").map((l) => l.trim()).filter(Boolean);
    if (!sentence || labels.length === 0) {
      showErrors(["Type a sentence and at least one label."]);
      return Promise.resolve();
    }
    remember(new URLSearchParams({ mode: "query", sentence, labels: labels.join(",") }));
    return runQuery(sentence, labels);
  }

  function setMode(mode) {
    for (const form of document.querySelectorAll(".mode-form")) form.hidden = form.dataset.mode !== mode;
    const radio = document.querySelector(`input[name="mode"][value="${mode}"]`);
    if (radio) radio.checked = true;
  }

  async function start() {
    const key = $("#api-key");
    key.value = sessionStorage.getItem(KEY_STORAGE) || "";
    key.addEventListener("input", () => {
      if (key.value) sessionStorage.setItem(KEY_STORAGE, key.value);
      else sessionStorage.removeItem(KEY_STORAGE);
    });
    // Another key may open a protected /health: read the model facts again when the key changes.
    key.addEventListener("change", () => loadHealth().then((ok) => ok && renderHistoryHead()));

    for (const radio of document.querySelectorAll('input[name="mode"]')) {
      radio.addEventListener("change", () => setMode(radio.value));
    }
    $("#predict-form").addEventListener("submit", submitPredict);
    $("#query-form").addEventListener("submit", submitQuery);
    $("#texts").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $("#predict-form").requestSubmit();
      }
    });

    const ready = await loadHealth();
    renderHistoryHead();
    document.body.dataset.ready = "true";
    const params = new URLSearchParams(window.location.search);
    if (params.get("mode") === "query" && state.task === "sentence-embedding") {
      setMode("query");
      if (params.get("sentence")) $("#sentence").value = params.get("sentence");
      if (params.get("labels")) $("#labels").value = params.get("labels");
      if (ready && params.get("sentence")) await submitQuery();
    } else if (params.getAll("text").length) {
      $("#texts").value = params.getAll("text").join("\n");
      if (ready) await submitPredict();
    }
    document.body.dataset.idle = "true";
  }

  start();
})();
