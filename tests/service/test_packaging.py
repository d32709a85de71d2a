"""The runtime extra stays torch-free, and the console script is the documented one."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_serve_extra_has_no_torch_or_transformers() -> None:
    serve = _names(PYPROJECT["project"]["optional-dependencies"]["serve"])
    assert {"onnxruntime", "tokenizers", "fastapi", "uvicorn", "redis", "orjson", "prometheus-client"} <= serve
    assert not serve & {"torch", "transformers", "sentence-transformers", "optimum", "mlapi"}


def test_torch_is_pinned_to_the_cpu_build_version() -> None:
    assert "torch==2.13.0" in PYPROJECT["project"]["optional-dependencies"]["torch"]


def test_console_script_is_mlapi() -> None:
    assert PYPROJECT["project"]["scripts"] == {"mlapi": "mlapi.cli:main"}


def test_server_modules_do_not_import_torch_at_module_level() -> None:
    root = Path(__file__).resolve().parents[2] / "service" / "mlapi"
    serving = ["api/app.py", "api/routes.py", "engine/predictor.py", "engine/batching.py", "engine/cache.py",
               "engine/tokenization.py", "engine/scoring.py", "settings.py", "api/schemas.py", "errors.py",
               "metrics.py", "api/middleware.py", "engine/manifest.py", "engine/backends/__init__.py",
               "engine/backends/onnx.py", "cli.py", "api/pages.py", "api/request_stats.py", "api/layout.py",
               "api/deadline.py", "server.py", "api/seed_infer.py", "auth/access.py", "auth/keys.py",
               "auth/ratelimit.py"]
    for name in serving:
        top_level = [line for line in (root / name).read_text().splitlines() if line.startswith(("import", "from"))]
        assert not [line for line in top_level if re.search(r"\b(torch|transformers)\b", line)], name
