"""Where benchmark results go: pretty JSON files, one per run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def write_results(report: dict[str, Any], out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)
