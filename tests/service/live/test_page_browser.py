"""The comparison page in a real browser: Debian's Chromium driven by Playwright against `mlapi serve` processes.

Two servers with the onnx and torch backends loaded (`MLAPI_EXTRA_BACKENDS=torch`):
- `tie`: a tiny classifier built so that onnx int8 and torch fp32 disagree on one chosen text and agree on another
  (see `write_tie_classifier`), with `MLAPI_MAX_CHARS=60` so a long text is refused;
- `minilm`: the bundled sentence-embedding model under the path prefix `/project`, for `/query` and `?text=`.
and two with onnx only: `broken` (its model cannot load, so it answers 503) and `guarded` (API keys required; the
key `slow` may make one request per 20 s).

Every test fails on a JavaScript error or a console error the test did not cause on purpose. Screenshots go to
`$TEST_ARTIFACTS_DIR` when set, else to the test's temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DISAGREE = "too close to call"
AGREE = "dead even"
MAX_CHARS = 60
SLOW_KEY = "mlapi_page-test-key-that-may-make-one-request"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def write_tie_classifier(out: Path, write_tiny_classifier: Callable[..., Path]) -> Path:
    """A tiny NEGATIVE / NEUTRAL / POSITIVE classifier whose POSITIVE and NEGATIVE scores differ by less than int8 sees.

    The head's NEGATIVE and POSITIVE weight rows are equal except at one unit j, where NEGATIVE has 0 and POSITIVE
    has a quarter of the row's int8 step. Per-channel int8 rounds that to 0, so on the int8 graph the two labels tie
    exactly and the tie goes to the first label, NEGATIVE. In fp32 (torch) POSITIVE leads by that weight times unit
    j's activation: unit j is set to be active (ReLU > 0) on DISAGREE and inactive on AGREE. So torch says POSITIVE
    on DISAGREE, and both backends say NEGATIVE on AGREE, on any CPU. NEUTRAL's bias keeps it last.
    """
    import torch
    from transformers import AutoTokenizer, DistilBertForSequenceClassification

    source = write_tiny_classifier(out, ["NEGATIVE", "NEUTRAL", "POSITIVE"])
    model = DistilBertForSequenceClassification.from_pretrained(str(source)).eval()
    tokens = AutoTokenizer.from_pretrained(str(source))([DISAGREE, AGREE], return_tensors="pt", padding=True)
    j = 0
    with torch.no_grad():
        cls = model.distilbert(**tokens).last_hidden_state[:, 0]
        direction = (cls[0] - cls[1]) / (cls[0] - cls[1]).norm() * 4
        model.pre_classifier.weight[j] = direction
        model.pre_classifier.bias[j] = -(direction @ (cls[0] + cls[1]) / 2)  # active on DISAGREE only
        row = model.classifier.weight[0].clone()
        row[j] = 0.0
        head = torch.stack([row, row, row.clone()])
        head[2, j] = row.abs().max() / 127 / 4
        model.classifier.weight.copy_(head)
        model.classifier.bias.copy_(torch.tensor([0.0, -4.0, 0.0]))
    model.save_pretrained(str(source))
    return source


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One `mlapi serve` process and its base URL (prefix included, no trailing slash)."""

    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def wait_ready(self, deadline: float, status: int = 200) -> None:
        """Until /health answers `status` (503 for a server whose model failed to load)."""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"mlapi serve exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=2) as response:
                    if response.status == status:
                        return
            except urllib.error.HTTPError as error:
                if error.code == status and b'"failed"' in error.read():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.base} never became ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start(model_dir: Path, port: int, log: Path, **settings: str) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAPI_")}
    env.update({"MLAPI_EXTRA_BACKENDS": "torch", "TOKENIZERS_PARALLELISM": "false", **settings})
    handle = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(model_dir), "--port", str(port)],
        env=env, stdout=handle, stderr=subprocess.STDOUT,
    )
    prefix = settings.get("MLAPI_PATH_PREFIX", "")
    return Server(process, f"http://127.0.0.1:{port}{prefix}", log)


@pytest.fixture(scope="module")
def servers(
    minilm_dir: Path, tiny_classifier_writer: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    """Both servers, started side by side, ready."""
    from mlapi.auth.keys import key_line
    from mlapi.build.bake import bake

    root = tmp_path_factory.mktemp("page")
    source = write_tie_classifier(root / "tie-source", tiny_classifier_writer)
    tie_dir = root / "tie"
    manifest = bake(str(source), tie_dir)
    assert manifest.default_precision == "int8", manifest.quantization.reason
    # The same model with its int8 graph overwritten: the server starts, the load fails, every answer is a 503.
    broken_dir = root / "broken"
    shutil.copytree(tie_dir, broken_dir)
    (broken_dir / str(manifest.onnx_int8)).write_bytes(b"not an ONNX graph")
    started = {
        "tie": _start(tie_dir, free_port(), root / "tie.log", MLAPI_MAX_CHARS=str(MAX_CHARS)),
        "minilm": _start(minilm_dir, free_port(), root / "minilm.log", MLAPI_PATH_PREFIX="/project"),
        "broken": _start(broken_dir, free_port(), root / "broken.log", MLAPI_EXTRA_BACKENDS=""),
        # One request, then a 20 s wait: with a burst of 1 s a bucket of 0.05 requests/s holds one request.
        "guarded": _start(tie_dir, free_port(), root / "guarded.log", MLAPI_EXTRA_BACKENDS="",
                          MLAPI_API_KEYS=key_line("slow", SLOW_KEY, rate=0.05), MLAPI_RATE_LIMIT_BURST_SECONDS="1"),
    }
    try:
        deadline = time.monotonic() + 180
        for name, server in started.items():
            server.wait_ready(deadline, 503 if name == "broken" else 200)
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed (.ci/run installs it: apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $TEST_ARTIFACTS_DIR (CI uploads it), else a temporary directory."""
    configured = os.environ.get("TEST_ARTIFACTS_DIR")
    path = Path(configured) if configured else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Watched:
    """A page whose console errors and uncaught exceptions are collected for the test to check."""

    page: object
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def open_page(browser) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """`open_page(url, viewport)`: a fresh context and page; after the test, no unexpected console errors."""
    opened: list[Watched] = []

    def factory(url: str, viewport: dict[str, int] = DESKTOP) -> Watched:
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        watched = Watched(page)
        page.on("console", lambda m: watched.errors.append(f"{m.text} @ {m.location.get('url')}")
                if m.type == "error" else None)
        page.on("pageerror", lambda error: watched.errors.append(f"uncaught: {error}"))
        page.goto(url)
        page.wait_for_selector("body[data-idle]")
        opened.append(watched)
        return watched

    yield factory
    for watched in opened:
        watched.page.context.close()


def expect(locator):  # type: ignore[no-untyped-def]
    """Playwright's retrying assertion (the page's CSP forbids the string predicates of wait_for_function)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _texts(page, backend: str, role: str) -> list[str]:  # type: ignore[no-untyped-def]
    return page.locator(f'.backend[data-backend="{backend}"] [data-role="{role}"]').all_text_contents()


def _ms(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d)?) ms", text)
    assert match, text
    return float(match.group(1))


def test_compare_shows_labels_latencies_cache_and_the_disagreement(servers, open_page, artifacts) -> None:
    watched = open_page(f"{servers['tie'].base}/")
    page = watched.page
    assert page.locator('[data-fact="precision"]').inner_text() == "onnx int8 · torch fp32"
    assert page.locator('[data-fact="task"]').inner_text() == "text-classification"

    page.get_by_label("Texts, one per line").fill(f"{DISAGREE}\n{AGREE}")
    page.get_by_label("Texts, one per line").press("Enter")  # Enter submits
    page.wait_for_selector('.backend[data-backend="torch"] .item >> nth=1')

    assert _texts(page, "onnx", "label") == ["NEGATIVE", "NEGATIVE"]
    assert _texts(page, "torch", "label") == ["POSITIVE", "NEGATIVE"]
    assert _texts(page, "onnx", "cache") == _texts(page, "torch", "cache") == ["miss", "miss"]
    for backend in ("onnx", "torch"):
        server_ms = _ms(_texts(page, backend, "server-ms")[0])
        browser_ms = _ms(_texts(page, backend, "browser-ms")[0])
        assert browser_ms >= server_ms - 1  # the browser's time includes the server's (display rounds to 1 ms)
        assert page.locator(f'.backend[data-backend="{backend}"] .item >> nth=0').locator(".bars li").count() == 3

    note = page.locator("#disagreement")
    assert note.is_visible()
    assert f"“{DISAGREE}”: onnx says NEGATIVE" in note.inner_text()
    assert "torch says POSITIVE" in note.inner_text()
    assert AGREE not in note.inner_text()
    assert page.url.endswith("/?text=too+close+to+call&text=dead+even")  # the address reproduces the run

    page.get_by_role("button", name="Compare").click()
    expect(page.locator("#history tbody tr")).to_have_count(4)
    assert _texts(page, "onnx", "cache") == _texts(page, "torch", "cache") == ["hit", "hit"]
    first_row = page.locator("#history tbody tr").first
    assert first_row.locator("th").inner_text() == AGREE
    assert first_row.locator('td[data-backend="torch"]').inner_text().startswith("NEGATIVE")
    page.screenshot(path=str(artifacts / "page-disagreement-desktop.png"), full_page=True)
    assert watched.errors == []


def test_text_in_the_address_runs_on_open_under_the_prefix(servers, open_page, artifacts) -> None:
    base = servers["minilm"].base
    watched = open_page(f"{base}?text=I+love+you.&text=I+hate+you.", PHONE)  # no trailing slash: <base> copes
    page = watched.page
    assert page.get_by_label("Texts, one per line").input_value() == "I love you.\nI hate you."
    assert _texts(page, "onnx", "label") == _texts(page, "torch", "label") == ["POSITIVE", "NEGATIVE"]
    assert page.locator("#disagreement").is_hidden()
    assert page.locator('[data-fact="task"]').inner_text() == "sentence-embedding"
    # Readable at both widths: nothing wider than the window.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=str(artifacts / "page-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)
    assert page.evaluate("document.documentElement.scrollWidth") <= DESKTOP["width"]
    page.screenshot(path=str(artifacts / "page-desktop.png"))
    assert watched.errors == []


def test_query_mode_ranks_the_labels_on_both_backends(servers, open_page, artifacts) -> None:
    watched = open_page(f"{servers['minilm'].base}/")
    page = watched.page
    page.get_by_label("Rank labels").check()
    page.get_by_label("Sentence").fill("The stock market rallied after the announcement")
    page.get_by_label("Candidate labels, comma-separated").fill("finance, sports, weather")
    page.get_by_label("Candidate labels, comma-separated").press("Enter")
    page.wait_for_selector('.backend[data-backend="torch"] .item')
    for backend in ("onnx", "torch"):
        assert _texts(page, backend, "label") == ["finance"]
        card = page.locator(f'.backend[data-backend="{backend}"]')
        assert card.locator(".bars li").evaluate_all("items => items.map(i => i.dataset.label)")[0] == "finance"
        assert card.locator(".bars li").count() == 3
    assert "mode=query" in page.url
    page.screenshot(path=str(artifacts / "page-query-desktop.png"), full_page=True)
    assert watched.errors == []


def test_refused_text_is_explained_in_words(servers, open_page, artifacts) -> None:
    watched = open_page(f"{servers['tie'].base}/")
    page = watched.page
    page.get_by_label("Texts, one per line").fill("fine\n" + "x" * (MAX_CHARS + 1))
    page.get_by_role("button", name="Compare").click()
    page.wait_for_selector('.backend[data-backend="torch"] [data-role="error"]')
    alert = page.get_by_role("alert").inner_text()
    assert "onnx, torch: 422 Invalid input" in alert
    assert f"text.1: String should have at most {MAX_CHARS} characters" in alert
    assert page.locator('.backend[data-backend="onnx"] [data-role="error"]').inner_text().startswith("422")
    page.screenshot(path=str(artifacts / "page-error-desktop.png"), full_page=True)
    # The only console errors are Chromium's notes of the two refused requests, which this test caused.
    assert len(watched.errors) == 2, watched.errors
    assert all("status of 422" in e and "/predict?backend=" in e for e in watched.errors), watched.errors


def test_api_key_is_kept_for_the_tab_and_sent_as_x_api_key(servers, open_page) -> None:
    watched = open_page(f"{servers['tie'].base}/")
    page = watched.page
    page.get_by_label("API key").fill("key-for-this-tab")
    with page.expect_request(lambda r: "/predict" in r.url) as sent:
        page.get_by_label("Texts, one per line").fill("hello")
        page.get_by_label("Texts, one per line").press("Enter")
    assert sent.value.headers["x-api-key"] == "key-for-this-tab"
    page.reload()
    page.wait_for_selector("body[data-idle]")
    assert page.get_by_label("API key").input_value() == "key-for-this-tab"
    assert watched.errors == []


def test_server_that_cannot_answer_is_explained_in_words(servers, open_page) -> None:
    watched = open_page(f"{servers['broken'].base}/")
    page = watched.page
    assert page.locator('[data-fact="status"]').inner_text() == "failed"
    expect(page.get_by_role("alert")).to_contain_text("health: 503 Service unavailable — ")
    page.get_by_label("Texts, one per line").fill("hello")
    page.get_by_label("Texts, one per line").press("Enter")
    # Without /health's list of backends the page asks the server's default one.
    error = page.locator('.backend[data-backend="default"] [data-role="error"]')
    expect(error).to_contain_text("503 Service unavailable — ")
    assert "model.int8.onnx" in error.inner_text() or "ONNX" in error.inner_text(), error.inner_text()
    assert len(watched.errors) == 2, watched.errors
    assert all("status of 503" in e for e in watched.errors), watched.errors


def test_api_key_errors_and_rate_limit_are_explained_in_words(servers, open_page) -> None:
    watched = open_page(f"{servers['guarded'].base}/")
    page = watched.page
    box, key, alert = page.get_by_label("Texts, one per line"), page.get_by_label("API key"), page.get_by_role("alert")
    box.fill("hello\ngoodbye")

    box.press("Enter")
    expect(alert).to_contain_text("onnx: 401 Not authorised: this server needs an API key (enter it above) — ")
    assert "X-API-Key" in alert.inner_text()  # the server's reason says how to send it

    key.fill("mlapi_not-a-key-this-server-knows")
    box.press("Enter")
    expect(alert).to_contain_text("onnx: 403 Forbidden: the API key was refused — API key not recognised")

    key.fill(SLOW_KEY)
    box.press("Enter")
    expect(page.locator('.backend[data-backend="onnx"] [data-role="label"]')).to_have_count(2)
    expect(alert).to_be_hidden()

    box.press("Enter")  # the key's one request is spent
    expect(alert).to_contain_text("onnx: 429 Too many requests: rate limit reached — ")
    assert re.search(r"\(retry after \d+ s\)", alert.inner_text()), alert.inner_text()
    statuses = [re.search(r"status of (\d+)", e).group(1) for e in watched.errors]  # type: ignore[union-attr]
    assert statuses == ["401", "403", "429"], watched.errors


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_interactive_docs_render_with_no_network(servers, browser, artifacts, path: str) -> None:
    """Every request that leaves this machine is aborted: the docs must render from the server's own files."""
    context = browser.new_context(viewport=DESKTOP)
    outside: list[str] = []

    def only_local(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    try:
        page.goto(f"{servers['minilm'].base}{path}")
        title = page.locator(".swagger-ui .info .title" if path == "/docs" else "h1")
        expect(title.first).to_contain_text("mlapi", timeout=30_000)
        if path == "/docs":
            expect(page.locator(".opblock-summary-path", has_text="/project/predict").first).to_be_visible()
        page.screenshot(path=str(artifacts / f"docs{path.replace('/', '-')}.png"))
    finally:
        context.close()
    assert outside == [] and errors == []
