"""The records of an evaluation run: one JSON line per finished example, flushed and fsynced.

A crash loses no finished result (a torn last line is cut on reading) and a rerun skips what is done;
``run.json`` holds the settings that change what a record means, so records of different runs never mix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RECORDS = "records.jsonl"
RUN_FILE = "run.json"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PARETO_PNG = "pareto.png"
# settings that change what a record means: a rerun into the same folder must match them
RUN_KEYS = ("model", "split", "seed", "gen_length", "block_length", "early_stop", "temperature", "chat")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Finished records; a torn last line (crash while writing) is dropped from the file."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):  # crash mid-write: cut the partial line so appends stay valid
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    records = []
    for number, line in enumerate(data.decode().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not a valid record ({err.msg}); fix or delete that line") from err
    return records


def record_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return record["spec"], record["task"], record["id"]


class RecordWriter:
    """Appends records as JSON lines, each flushed and fsynced before the next batch starts."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        for record in records:
            self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def check_run_file(out_dir: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix records of runs with other settings (``identity``: the ``RUN_KEYS`` values)."""
    run_path = out_dir / RUN_FILE
    if overwrite:
        for name in (RECORDS, RESULTS_JSON, RESULTS_MD, PARETO_PNG, RUN_FILE):
            (out_dir / name).unlink(missing_ok=True)
    elif run_path.is_file():
        previous = json.loads(run_path.read_text())
        diff = [f"{k}: {previous.get(k)!r} there, {v!r} now" for k, v in identity.items() if previous.get(k) != v]
        if diff:
            raise ValueError(
                f"{out_dir} holds records of a different run ({'; '.join(diff)}); "
                "use another output folder or overwrite it"
            )
    elif (out_dir / RECORDS).is_file() and (out_dir / RECORDS).stat().st_size:
        raise ValueError(f"{out_dir / RECORDS} exists without {RUN_FILE}; use another output folder or overwrite it")
    run_path.write_text(json.dumps(identity, indent=2) + "\n")
