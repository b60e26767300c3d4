"""The training log `stats.jsonl` of a run folder, read and written only here (see ARCHITECTURE.md).

One JSON object per line, appended by the training loop (`demo.distill.train`) as in NVlabs/edm: progress rows
(`step`, `iterations`, `loss`, the method's loss terms, `lr`, `img_per_s`, `elapsed_s`, `eta_s`, `time`) and event
rows (`{"step", "event": "done" | "stopped", "time"}`). A resumed run appends to the same file, so steps may repeat.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

STATS_FILE = "stats.jsonl"


def append_row(path: str | os.PathLike, row: dict) -> None:
    """Append one row (one line of JSON)."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_stats(path: str | os.PathLike) -> list[dict]:
    """All complete rows of a `stats.jsonl`; a partially written last line (or any unreadable one) is skipped, and a
    missing file has no rows."""
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def training_rows(rows: list[dict]) -> list[dict]:
    """The progress rows as one increasing sequence of steps: a resumed run's repeated steps replace the old ones."""
    out: list[dict] = []
    for row in rows:
        if "event" in row or "step" not in row:
            continue
        while out and out[-1]["step"] >= row["step"]:
            out.pop()
        out.append(row)
    return out


def events_since(rows: list[dict], since: float) -> list[str]:
    """The events (`done`, `stopped`) logged at or after the time `since`, oldest first."""
    return [r["event"] for r in rows if "event" in r and r.get("time", 0) >= since]
