"""The README's configuration table names every setting the server reads, and nothing it does not."""

from __future__ import annotations

import re
from pathlib import Path

from mlapi.settings import setting_variables

README = Path(__file__).resolve().parents[1] / "README.md"


def test_configuration_table_lists_every_setting() -> None:
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `MLAPI_")]
    documented = {name for row in rows for name in re.findall(r"`(MLAPI_[A-Z0-9_]+)`", row.split(" | ")[0])}
    assert documented == setting_variables(), (setting_variables() - documented, documented - setting_variables())
