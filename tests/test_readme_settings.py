"""The README's configuration table is the one the settings' own defaults and descriptions produce."""

from __future__ import annotations

import re
from pathlib import Path

from mlapi.settings import Settings, setting_variables, settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_rows() -> list[str]:
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def test_configuration_table_lists_every_setting() -> None:
    rows = [line for line in _readme_rows() if line.startswith("| `MLAPI_")]
    documented = {name for row in rows for name in re.findall(r"`(MLAPI_[A-Z0-9_]+)`", row.split(" | ")[0])}
    assert documented == setting_variables(), (setting_variables() - documented, documented - setting_variables())


def test_configuration_table_is_generated_from_the_settings() -> None:
    assert _readme_rows() == settings_table().splitlines(), "run `python -m mlapi.settings` and paste its table"


def test_every_setting_says_what_it_is_for() -> None:
    assert [name for name, field in Settings.model_fields.items() if len(field.description or "") < 10] == []
