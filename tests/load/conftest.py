"""Make the benchmark's modules in load/ importable: they are scripts beside each other, not a package."""

from __future__ import annotations

import sys
from pathlib import Path

LOAD_DIR = Path(__file__).resolve().parents[2] / "load"
if str(LOAD_DIR) not in sys.path:
    sys.path.insert(0, str(LOAD_DIR))
