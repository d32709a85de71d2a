"""A clean clone gets a working Pulumi environment: the pip toolchain finds requirements.txt where it looks."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from infra_program import PROGRAM_DIR, REPO


def _infra_extra() -> set[str]:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {spec.replace(" ", "") for spec in extras["infra"]}


def test_pulumi_yaml_uses_pip_with_a_requirements_file_in_the_program_directory() -> None:
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    assert (REPO / project["main"]).resolve() == PROGRAM_DIR
    assert project["runtime"]["options"] == {"toolchain": "pip", "virtualenv": ".venv"}
    # The language host runs `pip install -r requirements.txt` with the program directory as working directory.
    assert (PROGRAM_DIR / "requirements.txt").is_file()


def test_requirements_resolve_to_the_pinned_infra_packages() -> None:
    # What `pulumi install` runs, resolved without touching any environment or the network.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation", "--quiet",
         "--disable-pip-version-check", "--report", "-", "-r", "requirements.txt"],
        cwd=PROGRAM_DIR, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    installs = json.loads(result.stdout)["install"]
    project = [i for i in installs if i["metadata"]["name"] == "mlapi"]
    assert len(project) == 1 and project[0]["requested_extras"] == ["infra"]
    pinned = {
        req.split(";")[0].replace(" ", "")
        for req in project[0]["metadata"]["requires_dist"]
        if req.replace(" ", "").endswith('extra=="infra"')
    }
    assert pinned and {p.split("<")[0].split(">")[0] for p in pinned} == {
        p.split("<")[0].split(">")[0] for p in _infra_extra()
    }


def test_every_package_the_program_imports_is_in_the_infra_extra() -> None:
    imported: set[str] = set()
    for path in PROGRAM_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    declared = {spec.split(">")[0].split("<")[0].split("=")[0].replace("-", "_") for spec in _infra_extra()}
    third_party = {name for name in imported if name.startswith("pulumi")}
    assert third_party and third_party <= declared


def test_pulumi_install_keeps_the_editable_install_make_made(tmp_path) -> None:
    # `make` installs `-e .` into .venv; `pulumi install` then runs `pip install -r requirements.txt` from infra/
    # into the same .venv. A plain `..[infra]` replaced the editable install with a copy in site-packages, and later
    # edits under service/ were neither served nor tested. --no-deps: the Pulumi packages do not change which copy
    # of mlapi is imported, and leaving them out keeps this test off the network.
    source = tmp_path / "clone"
    (source / "infra").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "service", source / "service", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(PROGRAM_DIR / "requirements.txt", source / "infra" / "requirements.txt")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "--no-deps"]
    subprocess.run([*pip, "-e", str(source)], check=True, timeout=300)
    result = subprocess.run([*pip, "-r", "requirements.txt"], cwd=source / "infra",
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr

    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the scratch venv's mlapi, not this one
    imported = subprocess.run([python, "-c", "import mlapi; print(mlapi.__file__)"], cwd=tmp_path, env=clean,
                              capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert Path(imported) == source / "service" / "mlapi" / "__init__.py"
    (direct_url,) = (venv / "lib").glob("python*/site-packages/mlapi-*.dist-info/direct_url.json")
    assert json.loads(direct_url.read_text())["dir_info"] == {"editable": True}
