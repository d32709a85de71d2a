"""A clean clone gets a working Pulumi environment: the pip toolchain finds requirements.txt where it looks."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib

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
