"""Appending result rows to the benchmarks' CSV files, shared by the scripts beside it."""
from __future__ import annotations

import csv
import os
from pathlib import Path


def append_rows(path: Path | str, rows: list[dict]) -> None:
    """Append `rows` to the CSV at `path` (created with a header if absent); a file whose header lacks some
    of their columns is rewritten with them (its rows left blank there), through a temporary file."""
    if not rows:
        return
    path = Path(path)
    fields = list(rows[0])
    old: list[dict] = []
    if path.exists():
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            if set(fields) <= set(header):
                with open(path, "a", newline="", encoding="utf-8") as out:
                    csv.DictWriter(out, fieldnames=header).writerows(rows)
                return
            old = list(reader)
        fields = header + [k for k in fields if k not in header]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as out:
        w = csv.DictWriter(out, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(old + rows)
    os.replace(tmp, path)
