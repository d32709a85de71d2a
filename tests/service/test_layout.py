"""The README's layout of the `mlapi` package is the tree as it is: every module named, under its layer."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "service" / "mlapi"


def _documented() -> dict[str, set[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("- `service/mlapi/`", 1)[1].split("\n- `infra/`", 1)[0]
    entries = re.split(r"\n  - ", section)[1:]
    layers: dict[str, set[str]] = {}
    for entry in entries:
        head, _, names = entry.partition(":")
        layer = "" if head.startswith("top") else re.match(r"`(\w+)/`", head).group(1)  # type: ignore[union-attr]
        layers[layer] = set(re.findall(r"`(\w+/?)`", names.split("\n", 1)[0] + names)) - {"torch"}
    return layers


def _tree() -> dict[str, set[str]]:
    def names(folder: Path) -> set[str]:
        found = set()
        for path in folder.iterdir():
            if path.name in {"__init__.py", "__pycache__"}:
                continue
            if path.is_dir():
                found.add(path.name + "/")
            elif path.suffix == ".py":
                found.add(path.stem)
        return found

    top = names(PACKAGE)
    layers = {layer.rstrip("/"): names(PACKAGE / layer.rstrip("/")) for layer in top if layer.endswith("/")}
    return {"": {name for name in top if not name.endswith("/")}, **layers}


def test_readme_layout_names_every_module_under_its_layer() -> None:
    assert _documented() == _tree()
