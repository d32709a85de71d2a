"""The engine is a library, not a web app: importing any of its modules pulls in no web framework.

Imports are followed transitively in a fresh interpreter, so a web import reached through a helper module
(errors, settings, metrics) fails here as surely as one written in the engine itself.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import mlapi.engine

WEB = ("fastapi", "starlette", "uvicorn")


def _engine_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(mlapi.engine.__path__, "mlapi.engine."))


def _web_modules_after_importing(modules: list[str]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {WEB!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_engine_has_the_modules_this_test_walks() -> None:
    modules = _engine_modules()
    assert {"mlapi.engine.predictor", "mlapi.engine.batching", "mlapi.engine.backends.onnx"} <= set(modules)


def test_no_engine_module_imports_a_web_framework() -> None:
    assert _web_modules_after_importing(_engine_modules()) == []


def test_the_check_sees_a_web_import() -> None:
    assert "fastapi" in _web_modules_after_importing(["mlapi.api.handlers"])
