"""Checks of the GitHub Actions workflows: CI, pull-request previews and deploys on main.

Beyond structure (triggers, jobs, OIDC, pinned actions) and a checkov scan, the deploy job's smoke
test and k6 steps are executed with bash against a local HTTP server, so "a failed smoke test fails
the job" is observed, not assumed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
STACKS = ["dev", "fargate"]


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the bare key `on` as the boolean True.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job]["steps"]


def step_index(job_steps: list[dict], predicate) -> int:
    matches = [i for i, s in enumerate(job_steps) if predicate(s)]
    assert len(matches) == 1, matches
    return matches[0]


def uses(step: dict, action: str) -> bool:
    return step.get("uses", "").split("@")[0] == action


def named(step: dict, word: str) -> bool:
    return word in step.get("name", "")


@pytest.fixture(scope="module")
def ci() -> dict:
    return load("ci.yml")


@pytest.fixture(scope="module")
def preview() -> dict:
    return load("preview.yml")


@pytest.fixture(scope="module")
def deploy() -> dict:
    return load("deploy.yml")


# --- every workflow --------------------------------------------------------------------------------


def test_workflow_directory_holds_exactly_ci_preview_and_deploy():
    assert sorted(p.name for p in WORKFLOWS.iterdir()) == ["ci.yml", "deploy.yml", "preview.yml"]


def test_every_action_is_pinned_to_a_version():
    for path in WORKFLOWS.glob("*.yml"):
        for ref in re.findall(r"uses:\s*(\S+)", path.read_text()):
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+(\.\d+)*|[0-9a-f]{40})", ref), f"{path.name}: {ref}"


def test_run_scripts_take_no_expressions_inline():
    """Values reach scripts through env:, never spliced into the shell text (script injection)."""
    for path in WORKFLOWS.glob("*.yml"):
        workflow = load(path.name)
        for job in workflow["jobs"].values():
            for step in job.get("steps", []):
                assert "${{" not in step.get("run", ""), f"{path.name}: {step.get('name')}"


def test_no_workflow_holds_long_lived_aws_keys():
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert "aws-access-key-id" not in text
        assert "AWS_SECRET_ACCESS_KEY" not in text


def test_checkov_reports_no_failed_github_actions_checks(tool):
    checkov = tool("checkov")
    proc = subprocess.run(
        [checkov, "--quiet", "--compact", "--skip-download", "-o", "json",
         "--framework", "github_actions", "-d", str(WORKFLOWS)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert [c["check_id"] for c in report["results"]["failed_checks"]] == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 0


# --- ci.yml ----------------------------------------------------------------------------------------


def test_ci_runs_the_ci_script_on_push_to_main_and_pull_requests(ci: dict):
    assert ci["on"]["push"]["branches"] == ["main"]
    assert "pull_request" in ci["on"]
    assert any(s.get("run", "").strip() == "bash .ci/run" for s in steps(ci, "test"))
    assert ci["permissions"] == {"contents": "read"}


def test_ci_builds_the_image_and_runs_it_read_only_offline(ci: dict):
    job_steps = steps(ci, "image")
    build = job_steps[step_index(job_steps, lambda s: uses(s, "docker/build-push-action"))]
    assert build["with"]["push"] is False
    script = "\n".join(s.get("run", "") for s in job_steps)
    for needle in ("--read-only", "--tmpfs /tmp", "--network none", "docker stop", ".State.Health.Status"):
        assert needle in script


# --- preview.yml -----------------------------------------------------------------------------------


def test_preview_runs_on_pull_requests_for_each_stack(preview: dict):
    assert list(preview["on"]) == ["pull_request"]
    assert preview["jobs"]["preview"]["strategy"]["matrix"]["stack"] == STACKS


def test_preview_posts_a_diff_of_pulumi_preview_on_the_pull_request(preview: dict):
    job = preview["jobs"]["preview"]
    pulumi = job["steps"][step_index(job["steps"], lambda s: uses(s, "pulumi/actions"))]["with"]
    assert pulumi["command"] == "preview"
    assert pulumi["diff"] is True
    assert pulumi["comment-on-pr"] is True
    assert "matrix.stack" in pulumi["stack-name"]
    assert pulumi["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"
    assert job["permissions"]["pull-requests"] == "write"


def test_deploy_runs_pulumi_up_on_main_for_each_stack(deploy: dict):
    assert deploy["on"]["push"]["branches"] == ["main"]
    assert "pull_request" not in deploy["on"]
    job = deploy["jobs"]["deploy"]
    assert job["strategy"]["matrix"]["stack"] == STACKS
    pulumi = job["steps"][step_index(job["steps"], lambda s: uses(s, "pulumi/actions"))]["with"]
    assert pulumi["command"] == "up"
    assert "matrix.stack" in pulumi["stack-name"]
    assert deploy["concurrency"]["cancel-in-progress"] is False


@pytest.mark.parametrize(
    "name,job,role",
    [("preview.yml", "preview", "AWS_PREVIEW_ROLE_ARN"), ("deploy.yml", "deploy", "AWS_ROLE_ARN")],
)
def test_cloud_jobs_assume_an_aws_role_by_oidc_before_pulumi(name: str, job: str, role: str):
    workflow = load(name)
    assert workflow["jobs"][job]["permissions"]["id-token"] == "write"
    assert workflow["permissions"] == {"contents": "read"}
    job_steps = steps(workflow, job)
    aws = step_index(job_steps, lambda s: uses(s, "aws-actions/configure-aws-credentials"))
    pulumi = step_index(job_steps, lambda s: uses(s, "pulumi/actions"))
    # The environment `pulumi install` would build: infra/requirements.txt, installed from infra/.
    install = step_index(job_steps, lambda s: "cd infra && ../.venv/bin/pip install -r requirements.txt"
                         in s.get("run", ""))
    assert install < aws < pulumi
    assert job_steps[aws]["with"]["role-to-assume"] == f"${{{{ vars.{role} }}}}"


def test_preview_never_gets_the_deploy_role(preview: dict):
    # Pull-request code runs in preview: it must not be able to assume the role that can change the stacks.
    assert "AWS_ROLE_ARN" not in (WORKFLOWS / "preview.yml").read_text().replace("AWS_PREVIEW_ROLE_ARN", "")


def test_deploy_session_outlasts_a_first_up_and_the_role_allows_it(deploy: dict):
    job_steps = steps(deploy, "deploy")
    aws = job_steps[step_index(job_steps, lambda s: uses(s, "aws-actions/configure-aws-credentials"))]["with"]
    duration = int(aws["role-duration-seconds"])
    assert duration >= 2 * 3600
    assert deploy["jobs"]["deploy"]["timeout-minutes"] * 60 >= duration
    documented = re.search(r"MaxSessionDuration[^0-9]*(\d+)", (ROOT / "docs" / "container.md").read_text())
    assert documented and int(documented.group(1)) >= duration


def test_deploy_smokes_then_runs_k6_after_pulumi_up(deploy: dict):
    job_steps = steps(deploy, "deploy")
    up = step_index(job_steps, lambda s: uses(s, "pulumi/actions"))
    smoke = step_index(job_steps, lambda s: named(s, "Smoke"))
    setup_k6 = step_index(job_steps, lambda s: uses(s, "grafana/setup-k6-action"))
    k6 = step_index(job_steps, lambda s: named(s, "k6 run"))
    assert up < smoke < setup_k6 < k6
    assert job_steps[up]["id"] == "up"
    assert job_steps[smoke]["env"]["SERVICE_URLS"] == "${{ steps.up.outputs.service_urls }}"
    assert "continue-on-error" not in job_steps[smoke]


# --- the deploy job's smoke and k6 steps, executed -------------------------------------------------


CI_KEY = "mlapi_ci-key-for-the-fake-server"


class _PredictRecorder(BaseHTTPRequestHandler):
    """A /predict stub that, like both stacks, refuses a request without the right X-API-Key (401)."""

    failing: frozenset[str] = frozenset()
    requests: list[tuple[str, dict]] = []
    api_key: str = CI_KEY

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        failed = any(self.path.startswith(prefix) for prefix in type(self).failing)
        refused = self.headers.get("X-API-Key") != type(self).api_key
        status = 401 if refused else (500 if failed else 200)
        payload = (b'{"detail": "API key required", "error": "unauthorized", "error_type": "unauthorized"}'
                   if refused else b'{"error": "boom"}' if failed else b'{"predictions": [[0.1, 0.9]]}')
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def predict_server():
    """Starts a local /predict stub; call it with the path prefixes that should answer 500."""
    servers = []

    def start(*failing: str, key: str = CI_KEY):
        handler = type("Handler", (_PredictRecorder,), {"failing": frozenset(failing), "requests": [], "api_key": key})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", handler

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def run_step(
    deploy: dict, name_word: str, env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess:
    if shutil.which("curl") is None:
        pytest.skip("curl not found; the deploy runner has it")
    job_steps = steps(deploy, "deploy")
    step = job_steps[step_index(job_steps, lambda s: named(s, name_word))]
    full_env = {**os.environ, **{k: str(v) for k, v in step.get("env", {}).items()}, "API_KEY": CI_KEY, **env,
                "RUNNER_TEMP": str(tmp_path)}
    return subprocess.run(["bash", "-c", step["run"]], env=full_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_smoke_step_passes_when_every_url_answers_predict(deploy: dict, predict_server, tmp_path: Path):
    base, handler = predict_server()
    urls = {"project": f"{base}/project", "lab": f"{base}/lab/"}
    proc = run_step(deploy, "Smoke", {"SERVICE_URLS": json.dumps(urls), "SMOKE_RETRIES": "0"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(path for path, _ in handler.requests) == ["/lab/predict", "/project/predict"]
    for _, body in handler.requests:
        assert isinstance(body["text"], list) and body["text"]


def test_deploy_steps_send_the_ci_key_from_the_environment_secret(deploy: dict):
    job_steps = steps(deploy, "deploy")
    for word in ("Smoke", "k6 run"):
        step = job_steps[step_index(job_steps, lambda s, w=word: named(s, w))]
        assert step["env"]["API_KEY"] == "${{ secrets.MLAPI_CI_API_KEY }}", word


def test_smoke_step_sends_the_key_the_stack_checks(deploy: dict, predict_server, tmp_path: Path):
    base, handler = predict_server(key="the-stacks-key")
    urls = {"project": f"{base}/project"}
    proc = run_step(deploy, "Smoke", {"SERVICE_URLS": json.dumps(urls), "SMOKE_RETRIES": "0",
                                      "API_KEY": "the-stacks-key"}, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_smoke_step_fails_at_once_with_a_clear_message_when_the_key_is_refused(
    deploy: dict, predict_server, tmp_path: Path
):
    # The job's own retry budget (18 x 10 s) would take 3 minutes; a refused key must not wait for any of it.
    base, handler = predict_server(key="the-stacks-key")
    urls = {"project": f"{base}/project", "lab": f"{base}/lab"}
    proc = run_step(deploy, "Smoke", {"SERVICE_URLS": json.dumps(urls), "API_KEY": "another-key"}, tmp_path)
    assert proc.returncode != 0
    assert len(handler.requests) == 1
    assert "answered 401" in proc.stdout and "MLAPI_CI_API_KEY" in proc.stdout


def test_smoke_step_fails_with_a_clear_message_when_no_key_is_configured(
    deploy: dict, predict_server, tmp_path: Path
):
    base, handler = predict_server()
    proc = run_step(deploy, "Smoke", {"SERVICE_URLS": json.dumps({"p": f"{base}/p"}), "API_KEY": ""}, tmp_path)
    assert proc.returncode != 0
    assert "MLAPI_CI_API_KEY is empty" in proc.stdout
    assert handler.requests == []


def test_smoke_step_still_retries_while_the_service_is_not_up(deploy: dict, predict_server, tmp_path: Path):
    base, handler = predict_server("/lab")
    urls = {"lab": f"{base}/lab"}
    proc = run_step(deploy, "Smoke", {"SERVICE_URLS": json.dumps(urls), "SMOKE_RETRIES": "2",
                                      "SMOKE_RETRY_DELAY": "0"}, tmp_path)
    assert proc.returncode != 0
    assert len(handler.requests) == 3 and "after 2 retries" in proc.stdout


def test_smoke_step_fails_when_one_url_answers_an_error(deploy: dict, predict_server, tmp_path: Path):
    base, _ = predict_server("/lab")
    urls = {"project": f"{base}/project", "lab": f"{base}/lab"}
    proc = run_step(deploy, "Smoke", {"SERVICE_URLS": json.dumps(urls), "SMOKE_RETRIES": "0"}, tmp_path)
    assert proc.returncode != 0


def test_smoke_step_fails_when_nothing_listens(deploy: dict, predict_server, tmp_path: Path):
    base, _ = predict_server()
    dead = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = dead.server_address[1]
    dead.server_close()
    urls = {"project": f"{base}/project", "gone": f"http://127.0.0.1:{port}/gone"}
    proc = run_step(deploy, "Smoke", {"SERVICE_URLS": json.dumps(urls), "SMOKE_RETRIES": "0"}, tmp_path)
    assert proc.returncode != 0


@pytest.mark.parametrize("outputs", ["", "{}", '["http://127.0.0.1:1/project"]'])
def test_smoke_step_fails_when_the_stack_exports_no_url_map(deploy: dict, outputs: str, tmp_path: Path):
    proc = run_step(deploy, "Smoke", {"SERVICE_URLS": outputs, "SMOKE_RETRIES": "0"}, tmp_path)
    assert proc.returncode != 0


def test_k6_step_runs_the_seed_profile_against_each_smoked_url(deploy: dict, predict_server, tmp_path: Path):
    base, _ = predict_server()
    urls = {"project": f"{base}/project", "lab": f"{base}/lab"}
    smoke = run_step(deploy, "Smoke", {"SERVICE_URLS": json.dumps(urls), "SMOKE_RETRIES": "0"}, tmp_path)
    assert smoke.returncode == 0, smoke.stderr
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "k6-calls.txt"
    fake_k6 = bin_dir / "k6"
    fake_k6.write_text(f'#!/usr/bin/env bash\necho "API_KEY=$API_KEY $*" >> "{calls}"\n')
    fake_k6.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    proc = run_step(deploy, "k6 run", {"PATH": path}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    # The key reaches k6 through its environment (seed_profile.js reads API_KEY), never on the command line.
    assert calls.read_text().splitlines() == [
        f"API_KEY={CI_KEY} run -e BASE_URL={base}/lab --duration 30s load/seed_profile.js",
        f"API_KEY={CI_KEY} run -e BASE_URL={base}/project --duration 30s load/seed_profile.js",
    ]
    assert (ROOT / "load" / "seed_profile.js").is_file()


def test_k6_step_fails_when_k6_reports_a_breached_threshold(deploy: dict, tmp_path: Path):
    (tmp_path / "service_urls.txt").write_text("http://127.0.0.1:1/project\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_k6 = bin_dir / "k6"
    fake_k6.write_text("#!/usr/bin/env bash\nexit 99\n")
    fake_k6.chmod(0o755)
    proc = run_step(deploy, "k6 run", {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, tmp_path)
    assert proc.returncode == 99
