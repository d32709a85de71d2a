"""Every test file is collected: a test folder named like one pytest skips by default would never run."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST_DEFAULT_NORECURSEDIRS = ["*.egg", ".*", "_darcs", "build", "CVS", "dist", "node_modules", "venv", "{arch}"]


def test_no_test_folder_matches_a_pattern_pytest_does_not_recurse_into() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    patterns = config.get("norecursedirs", PYTEST_DEFAULT_NORECURSEDIRS)
    folders = {path.parent for path in (ROOT / "tests").rglob("test_*.py")}
    skipped = sorted(str(folder.relative_to(ROOT)) for folder in folders for part in folder.relative_to(ROOT).parts
                     if any(fnmatch.fnmatch(part, pattern) for pattern in patterns))
    assert skipped == []
