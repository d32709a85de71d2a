"""Checks of the container image definition that need no Docker engine.

The Dockerfile is linted (hadolint) and scanned (checkov), parsed into stages to assert what each
stage may contain, and its HEALTHCHECK command is executed against a local HTTP server. The
compose file and .dockerignore are checked against the Dockerfile they build.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
RUNTIME_UID_MIN = 10000


# --- tools -----------------------------------------------------------------------------------------


def checkov_summary(checkov: str, *args: str) -> tuple[dict, list[dict]]:
    """Runs checkov offline and returns (summary, failed checks); one framework per call."""
    proc = subprocess.run(
        [checkov, "--quiet", "--compact", "--skip-download", "-o", "json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    summary = {"passed": 0, "failed": 0, "parsing_errors": 0}
    failed: list[dict] = []
    for one in reports:
        for key in summary:
            summary[key] += one["summary"][key]
        failed += one["results"].get("failed_checks", [])
    return summary, failed


# --- a small Dockerfile parser --------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for ins in self.all("ENV"):
            for token in shlex.split(ins.args):
                key, _, value = token.partition("=")
                values[key] = value
        return values

    def copies(self) -> list[tuple[str | None, list[str], str]]:
        """(--from stage or None, sources, destination) of each COPY."""
        result = []
        for ins in self.all("COPY"):
            tokens = shlex.split(ins.args)
            source_stage = None
            paths = []
            for token in tokens:
                if token.startswith("--from="):
                    source_stage = token.removeprefix("--from=")
                elif not token.startswith("--"):
                    paths.append(token)
            result.append((source_stage, paths[:-1], paths[-1]))
        return result


def parse_dockerfile(text: str) -> list[Stage]:
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=parts[0]))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return {s.name: s for s in parse_dockerfile(DOCKERFILE.read_text())}


@pytest.fixture(scope="module")
def runtime(stages: dict[str, Stage]) -> Stage:
    return stages["runtime"]


def run_lines(stage: Stage) -> str:
    return "\n".join(i.args for i in stage.all("RUN"))


BAKE_COMMAND = r'mlapi bake "$MODEL_ID" ${MODEL_REVISION:+--revision "$MODEL_REVISION"} --out '


def bake_command(stage: Stage) -> str:
    """The shell command of the bake stage's `mlapi bake` RUN, its --mount flags stripped."""
    (line,) = [i.args for i in stage.all("RUN") if "mlapi bake" in i.args]
    return re.sub(r"--mount=\S+\s+", "", line)


def bake_out_dir(stage: Stage) -> str:
    command = bake_command(stage)
    assert command.startswith(BAKE_COMMAND), f"the bake stage must run: {BAKE_COMMAND}DIR"
    return command[len(BAKE_COMMAND):].split()[0]


def mounts(instruction: Instruction) -> list[dict[str, str]]:
    """The `--mount=` options of a RUN, each as a dict."""
    found = []
    for token in shlex.split(instruction.args):
        if token.startswith("--mount="):
            found.append(dict(part.partition("=")[::2] for part in token.removeprefix("--mount=").split(",")))
    return found


def arg_default(stage: Stage, name: str) -> str:
    for ins in stage.all("ARG"):
        key, _, value = ins.args.partition("=")
        if key == name:
            return value
    raise AssertionError(f"ARG {name} not declared in stage {stage.name}")


# --- local HTTP server for the HEALTHCHECK ---------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def serve(status: int) -> tuple[ThreadingHTTPServer, type[_Recorder]]:
    handler = type("Handler", (_Recorder,), {"status": status, "paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


def run_healthcheck(runtime: Stage, port: int, prefix: str) -> subprocess.CompletedProcess:
    (healthcheck,) = runtime.all("HEALTHCHECK")
    command = json.loads(healthcheck.args[healthcheck.args.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    env = {**os.environ, "MLAPI_PORT": str(port), "MLAPI_PATH_PREFIX": prefix}
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30)


# --- linters ---------------------------------------------------------------------------------------


def test_hadolint_reports_no_findings_on_dockerfile(tool):
    hadolint = tool("hadolint")
    proc = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(DOCKERFILE)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert json.loads(proc.stdout or "[]") == []
    assert proc.returncode == 0


def test_hadolint_flags_a_dockerfile_with_known_faults(tool):
    hadolint = tool("hadolint")
    bad = "FROM python:latest\nRUN apt-get install curl\nCMD python app.py\n"
    proc = subprocess.run(
        [hadolint, "--no-color", "--format", "json", "-"],
        input=bad, capture_output=True, text=True, timeout=60,
    )
    codes = {finding["code"] for finding in json.loads(proc.stdout)}
    assert {"DL3007", "DL3008", "DL3025"} <= codes
    assert proc.returncode != 0


def test_checkov_reports_no_failed_dockerfile_checks(tool):
    checkov = tool("checkov")
    summary, failed = checkov_summary(checkov, "--framework", "dockerfile", "-f", "Dockerfile")
    assert [c["check_id"] for c in failed] == []
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 0


# --- stage structure -------------------------------------------------------------------------------


def test_parse_dockerfile_yields_model_bake_deps_and_runtime_stages_in_order():
    names = [s.name for s in parse_dockerfile(DOCKERFILE.read_text())]
    assert names == ["model", "bake", "runtime-deps", "runtime"]


def test_base_images_are_pinned_python_311_slim(stages: dict[str, Stage]):
    for stage in stages.values():
        if stage.name == "model":
            continue
        image, _, tag = stage.base.partition(":")
        assert image == "python"
        assert tag.startswith("3.11") and "slim" in tag


def test_bake_stage_installs_cpu_torch_at_the_pyproject_pin(stages: dict[str, Stage]):
    bake = stages["bake"]
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["torch"]
    (pin,) = [req for req in extra if req.replace(" ", "").startswith("torch==")]
    torch_lines = [line for line in run_lines(bake).splitlines() if '"torch==' in line]
    assert len(torch_lines) == 1
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_lines[0]
    assert "--extra-index-url" not in run_lines(bake)
    assert arg_default(bake, "TORCH_VERSION") == pin.split("==")[1].strip()


def test_bake_run_line_writes_the_dir_the_runtime_copies_and_serves(stages: dict[str, Stage], runtime: Stage):
    out_dir = bake_out_dir(stages["bake"])
    from_bake = [(srcs, dest) for stage, srcs, dest in runtime.copies() if stage == "bake"]
    assert from_bake == [([out_dir], runtime.env()["MLAPI_MODEL_DIR"])]


def test_bake_stage_pins_the_model_revision_to_a_commit(stages: dict[str, Stage]):
    assert arg_default(stages["bake"], "MODEL_ID") == "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
    assert re.fullmatch(r"[0-9a-f]{40}", arg_default(stages["bake"], "MODEL_REVISION"))


def test_bake_stage_leaves_torch_weights_out_of_the_model(stages: dict[str, Stage]):
    bake_line = next(line for line in run_lines(stages["bake"]).splitlines() if "mlapi bake" in line)
    assert bake_line.split()[-1] == "--onnx-only" or " --onnx-only " in bake_line


def test_bake_cli_accepts_the_flags_the_image_uses(stages: dict[str, Stage], tool):
    bake_out_dir(stages["bake"])
    mlapi = tool("mlapi")
    proc = subprocess.run([mlapi, "bake", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--revision", "--out", "--onnx-only"):
        assert flag in proc.stdout


# --- model sources and build secrets -----------------------------------------------------------------

SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "ACCESS_KEY", "CREDENTIAL")


def bake_run(stages: dict[str, Stage]) -> Instruction:
    (run,) = [i for i in stages["bake"].all("RUN") if "mlapi bake" in i.args]
    return run


def test_model_stage_is_an_empty_default_that_a_named_context_replaces(stages: dict[str, Stage]):
    """Hub and S3 builds need no `--build-context model=...`: the stage of that name stands in, and holds nothing."""
    model = stages["model"]
    assert model.base == "scratch"
    assert {i.keyword for i in model.instructions} <= {"WORKDIR"}


def test_bake_mounts_the_local_checkpoint_where_the_stacks_point_model_id():
    from infra.shared.image import LOCAL_MODEL_MOUNT

    stages = {s.name: s for s in parse_dockerfile(DOCKERFILE.read_text())}
    binds = [m for m in mounts(bake_run(stages)) if m.get("type") == "bind"]
    assert binds == [{"type": "bind", "from": "model", "target": LOCAL_MODEL_MOUNT}]
    # Read-only (bind mounts are unless `rw`): baking cannot write into the user's checkpoint.
    assert "rw" not in binds[0]


def test_build_secrets_are_mounted_for_the_bake_step_only_as_env(stages: dict[str, Stage]):
    """The ids the stacks pass as docker-build `secrets` are exactly the ones the bake step mounts; each goes into
    that one RUN's environment, never a file a later COPY could pick up."""
    from infra.shared.image import AWS_SECRET_IDS, HF_TOKEN_SECRET

    secret_mounts = [m for m in mounts(bake_run(stages)) if m.get("type") == "secret"]
    assert {m["id"] for m in secret_mounts} == {HF_TOKEN_SECRET, *AWS_SECRET_IDS}
    assert {m["id"]: m["env"] for m in secret_mounts} == {
        "hf_token": "HF_TOKEN", "aws_access_key_id": "AWS_ACCESS_KEY_ID",
        "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY", "aws_session_token": "AWS_SESSION_TOKEN"}
    assert all("target" not in m and m.get("required", "false") == "false" for m in secret_mounts)
    for stage in stages.values():
        for run in stage.all("RUN"):
            if run is not bake_run(stages):
                assert all(m.get("type") != "secret" for m in mounts(run)), (stage.name, run.args)


def test_no_arg_or_env_can_carry_a_credential(stages: dict[str, Stage]):
    """ARG values land in the image history and ENV in its config: neither may name a token or key."""
    for stage in stages.values():
        names = [i.args.partition("=")[0] for i in stage.all("ARG")] + list(stage.env())
        for name in names:
            assert not any(word in name.upper() for word in SECRET_WORDS), (stage.name, name)
    assert "HF_TOKEN" not in DOCKERFILE.read_text().replace("env=HF_TOKEN", "").replace("HF_TOKEN,", "")


def test_runtime_stage_takes_only_the_baked_model_and_mounts_nothing(stages: dict[str, Stage], runtime: Stage):
    assert [(srcs, dest) for frm, srcs, dest in runtime.copies() if frm == "bake"] == [
        ([bake_out_dir(stages["bake"])], runtime.env()["MLAPI_MODEL_DIR"])]
    assert all(frm != "model" for stage in stages.values() for frm, _, _ in stage.copies())
    for stage in (runtime, stages["runtime-deps"]):
        assert all(not mounts(run) for run in stage.all("RUN"))


def test_every_build_arg_the_stacks_pass_is_declared_by_the_bake_stage(stages: dict[str, Stage]):
    from infra.model_source import ModelSource
    from infra.shared.image import model_build

    declared = {i.args.partition("=")[0] for i in stages["bake"].all("ARG")}
    bake = stages["bake"].instructions
    # Declared before the bake RUN: every RUN after an ARG uses it, so a new fingerprint re-runs the bake.
    assert max(bake.index(i) for i in stages["bake"].all("ARG")) < bake.index(bake_run(stages))
    # The runtime stages declare no ARG: a build arg's value would show in the shipped image's history.
    assert not stages["runtime"].all("ARG") and not stages["runtime-deps"].all("ARG")
    for source in (ModelSource("hub", "org/name", "a" * 40), ModelSource("local", "/ckpt", "b" * 64),
                   ModelSource("s3", "s3://bucket/prefix", "c" * 64)):
        assert set(model_build(source, "us-east-1").build_args) <= declared, source.kind


@pytest.mark.parametrize(
    ("model_id", "revision", "expected"),
    [
        ("org/name", "a" * 40, ["org/name", "--revision", "a" * 40, "--out"]),
        ("/model-src", "", ["/model-src", "--out"]),
        ("s3://bucket/my prefix", "", ["s3://bucket/my prefix", "--out"]),
    ],
)
def test_bake_command_passes_revision_only_when_set(stages: dict[str, Stage], model_id: str, revision: str,
                                                    expected: list[str]):
    """The RUN line under a POSIX shell, `mlapi` replaced by a function that prints its arguments."""
    script = 'mlapi() { shift; for a in "$@"; do printf "%s\\n" "$a"; done; }\n' + bake_command(stages["bake"])
    proc = subprocess.run(["sh", "-c", script], env={"MODEL_ID": model_id, "MODEL_REVISION": revision,
                                                     "PATH": os.environ["PATH"]},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.splitlines()
    assert args[: len(expected)] == expected
    assert args[-1] == "--onnx-only"


def test_runtime_stage_has_serve_extra_only(stages: dict[str, Stage], runtime: Stage):
    deps = run_lines(stages["runtime-deps"])
    assert '".[serve]"' in deps
    for stage in (stages["runtime-deps"], runtime):
        text = run_lines(stage).lower()
        assert "torch" not in text
        for compiler in ("apt-get", "gcc", "build-essential", "g++"):
            assert compiler not in text
    sources = {stage for stage, _, _ in runtime.copies()}
    assert sources == {"runtime-deps", "bake"}
    venv_copies = [dest for stage, srcs, dest in runtime.copies() if stage == "runtime-deps"]
    assert venv_copies == ["/opt/venv"]


def test_runtime_stage_runs_as_numeric_non_root_uid(runtime: Stage):
    user = runtime.all("USER")[-1].args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit()
    assert int(uid) >= RUNTIME_UID_MIN
    assert f"--uid {uid}" in run_lines(runtime)
    assert runtime.instructions.index(runtime.all("USER")[-1]) > max(
        runtime.instructions.index(i) for i in runtime.all("RUN")
    )


def test_runtime_env_forbids_hub_access_and_keeps_writes_in_tmp(runtime: Stage):
    env = runtime.env()
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["TRANSFORMERS_OFFLINE"] == "1"
    for key in ("HOME", "HF_HOME", "XDG_CACHE_HOME"):
        assert env[key].startswith("/tmp")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "mlapi bake" not in run_lines(runtime)


def test_runtime_env_listens_on_all_interfaces_at_the_exposed_port(runtime: Stage):
    env = runtime.env()
    assert env["MLAPI_HOST"] == "0.0.0.0"
    assert env["MLAPI_BACKEND"] == "onnx"
    assert [i.args for i in runtime.all("EXPOSE")] == [env["MLAPI_PORT"]]


def test_entrypoint_is_exec_form_mlapi_serve(runtime: Stage):
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert json.loads(entrypoint.args) == ["mlapi", "serve"]
    assert [i.args for i in runtime.all("STOPSIGNAL")] == ["SIGTERM"]
    assert runtime.all("CMD") == []


# --- HEALTHCHECK, executed -------------------------------------------------------------------------


def test_healthcheck_exits_zero_when_health_answers_200(runtime: Stage):
    server, handler = serve(200)
    try:
        proc = run_healthcheck(runtime, server.server_address[1], "/project")
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert handler.paths == ["/project/health"]


def test_healthcheck_exits_nonzero_when_health_answers_503(runtime: Stage):
    server, handler = serve(503)
    try:
        proc = run_healthcheck(runtime, server.server_address[1], "")
    finally:
        server.shutdown()
    assert proc.returncode != 0
    assert handler.paths == ["/health"]


def test_healthcheck_exits_nonzero_when_nothing_listens(runtime: Stage):
    server, _ = serve(200)
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    assert run_healthcheck(runtime, port, "").returncode != 0


# --- build context ---------------------------------------------------------------------------------


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        globs = [glob, glob.removeprefix("**/")] if glob.startswith("**/") else [glob]
        hit = any(
            fnmatch.fnmatchcase(c, g) or (g != glob and fnmatch.fnmatchcase(c.split("/")[-1], g))
            for c in candidates
            for g in globs
        )
        if hit:
            excluded = not negate
    return excluded


def test_dockerignore_admits_exactly_what_the_dockerfile_copies(stages: dict[str, Stage]):
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = {
        src for stage in stages.values() for frm, srcs, _ in stage.copies() if frm is None for src in srcs
    }
    assert copied == {"pyproject.toml", "README.md", "service"}
    for src in copied:
        assert not dockerignore_excludes(patterns, src)
        assert (ROOT / src).exists(), f"{src} is copied into the image but missing from the repository"
    for path in (".venv/bin/python", "load/results/run.json", "tests/test_x.py", "models/m.onnx",
                 "infra/__main__.py", ".git/HEAD", "service/mlapi/__pycache__/cli.cpython-311.pyc"):
        assert dockerignore_excludes(patterns, path), path


# --- docker compose --------------------------------------------------------------------------------


def compose_default(value: str) -> str:
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return match.group(1) if match else value


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_builds_this_dockerfile_with_its_default_model(compose: dict, stages: dict[str, Stage]):
    build = compose["services"]["api"]["build"]
    assert build["context"] == "."
    assert compose_default(build["args"]["MODEL_ID"]) == arg_default(stages["bake"], "MODEL_ID")
    assert compose_default(build["args"]["MODEL_REVISION"]) == arg_default(stages["bake"], "MODEL_REVISION")


def test_compose_points_api_cache_at_healthy_redis(compose: dict):
    api, redis = compose["services"]["api"], compose["services"]["redis"]
    assert api["environment"]["MLAPI_REDIS_URL"] == "redis://redis:6379/0"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert redis["image"].startswith("redis:") and not redis["image"].endswith(":latest")
    assert "ping" in redis["healthcheck"]["test"]


def test_compose_runs_api_read_only_as_the_image_user(compose: dict, runtime: Stage):
    api = compose["services"]["api"]
    assert api["read_only"] is True
    assert "/tmp" in api["tmpfs"]
    assert api["user"] == runtime.all("USER")[-1].args
    assert api["cap_drop"] == ["ALL"]
    assert api["ports"][0].endswith(":" + runtime.env()["MLAPI_PORT"])
