"""Put monitoring/ (the dashboard generator) and this folder's helpers on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "monitoring")]
