"""Installed size of a set of Python packages and everything they pull in.

The runtime image installs only the `serve` extra (ONNX Runtime, tokenizers,
numpy, FastAPI, ...), not torch and transformers. The benchmark reports both
footprints from the packages installed here, so the saving is a measured number.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

MIB = 1024 * 1024


def _applies(req: Requirement, extras: Iterable[str]) -> bool:
    """True when req's environment marker holds here for any of the requested extras."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in [*extras, ""])


def dependency_closure(requirements: Iterable[str]) -> set[str]:
    """Names of the installed distributions that the requirement strings need, transitively.

    Requirements that are not installed here are skipped: only what exists can be measured.
    """
    seen: set[str] = set()
    todo = [Requirement(text) for text in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            sub = Requirement(text)
            if _applies(sub, req.extras):
                todo.append(sub)
    return {key.split("[")[0] for key in seen}


def installed_bytes(name: str) -> int:
    """Bytes on disk of every file a distribution installed (its RECORD), including bundled shared libraries."""
    dist = metadata.distribution(name)
    total = 0
    for file in dist.files or []:
        path = Path(str(dist.locate_file(file)))
        if path.is_file():
            total += path.stat().st_size
    return total


def closure_mib(requirements: Iterable[str]) -> dict[str, float]:
    """MiB per distribution in the closure of the requirements, largest first."""
    sizes = {name: installed_bytes(name) / MIB for name in dependency_closure(requirements)}
    return {name: round(size, 1) for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])}


def serve_requirements(pyproject: Path) -> list[str]:
    """The `serve` extra from pyproject.toml: what the torch-free runtime image installs."""
    data = tomllib.loads(pyproject.read_text())
    return list(data["project"]["optional-dependencies"]["serve"])


SEED_RUNTIME = ["torch", "transformers", "fastapi", "uvicorn[standard]"]


def footprint_report(pyproject: Path) -> dict[str, object]:
    """Sizes of the torch-free serving closure and of the seeds' torch runtime closure, in MiB."""
    serve = closure_mib(serve_requirements(pyproject))
    seed = closure_mib(SEED_RUNTIME)
    return {
        "serve_total_mib": round(sum(serve.values()), 1),
        "seed_runtime_total_mib": round(sum(seed.values()), 1),
        "seed_runtime_requirements": SEED_RUNTIME,
        "serve_packages_mib": serve,
        "seed_runtime_packages_mib": seed,
    }
