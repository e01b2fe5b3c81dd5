"""The records of an evaluation run: one JSON line per finished example, flushed and fsynced.

A crash loses no finished result (a torn last line is ignored on reading and cut before the next append)
and a rerun skips what is done; ``run.json`` holds the settings that change what a record means, so
records of different runs never mix. One process writes ``records.jsonl``; the ranks of a torchrun job
write ``records.rank{r}.jsonl`` each (no two processes append to one file), folded into
``records.jsonl`` at the end. Reading merges every records file, keeping the first record of each
(spec, task, example), so no example is ever counted twice. A run holds ``.lock`` (flock) while it
writes: a second run in the same folder is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RECORDS = "records.jsonl"
RANK_RECORDS = "records.rank{}.jsonl"  # rank r's records under torchrun, folded into RECORDS at the end
LOCK_FILE = ".lock"
RUN_FILE = "run.json"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PARETO_PNG = "pareto.png"
# settings that change what a record means: a rerun into the same folder must match them
RUN_KEYS = ("model", "split", "seed", "gen_length", "block_length", "early_stop", "temperature", "chat")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Finished records of one file; a torn last line (a crash, or a writer mid-append) is skipped."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]  # a partial last line is not a record (yet)
    records = []
    for number, line in enumerate(data.decode().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not a valid record ({err.msg}); fix or delete that line") from err
        problem = record_problem(record)
        if problem:
            raise ValueError(f"{path}:{number} is not a valid record ({problem}); fix or delete that line")
        records.append(record)
    return records


# what a record must hold to be resumed and aggregated: (field, type)
RECORD_FIELDS = (("spec", str), ("task", str), ("id", str), ("score", (int, float)), ("nfe", int),
                 ("tokens", int), ("tokens_per_nfe", (int, float)), ("seconds", (int, float)),
                 ("batch", str), ("batch_seconds", (int, float)))


def record_problem(record: Any) -> str | None:
    """What is wrong with a parsed record (a JSON object with the fields above), or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    for name, kind in RECORD_FIELDS:
        if name not in record:
            return f"no {name!r} field"
        if isinstance(record[name], bool) or not isinstance(record[name], kind):
            return f"field {name!r} is {record[name]!r}"
    return None


def rank_records_path(out_dir: Path, rank: int, world: int) -> Path:
    """The file a process appends to: ``records.jsonl`` alone, ``records.rank{r}.jsonl`` as rank r of a job."""
    return out_dir / (RECORDS if world == 1 else RANK_RECORDS.format(rank))


def record_files(out_dir: Path) -> list[Path]:
    """``records.jsonl`` and the ranks' files present in ``out_dir``, in that order (ranks ascending)."""
    ranks = []
    for path in out_dir.glob(RANK_RECORDS.format("*")):
        match = re.fullmatch(RANK_RECORDS.format(r"(\d+)").replace(".", r"\."), path.name)
        if match:
            ranks.append((int(match.group(1)), path))
    main = out_dir / RECORDS
    return ([main] if main.is_file() else []) + [p for _, p in sorted(ranks)]


def read_run_records(out_dir: Path) -> list[dict[str, Any]]:
    """Every finished record of a results folder: all its records files merged, the first record of each
    (spec, task, example) kept (two processes that decoded the same example never count it twice)."""
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in record_files(out_dir):
        for record in read_records(path):
            merged.setdefault(record_key(record), record)
    return list(merged.values())


def fold_records(out_dir: Path, order: Callable[[dict[str, Any]], Any]) -> None:
    """Append the ranks' records missing from ``records.jsonl`` to it (sorted by ``order``), then delete the
    ranks' files. A crash in between leaves duplicates, which reading drops."""
    rank_files = [p for p in record_files(out_dir) if p.name != RECORDS]
    if not rank_files:
        return
    main = out_dir / RECORDS
    seen = {record_key(r) for r in read_records(main)}
    extra: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in rank_files:
        for record in read_records(path):
            if record_key(record) not in seen:
                extra.setdefault(record_key(record), record)
    writer = RecordWriter(main)
    try:
        writer.write(sorted(extra.values(), key=order))
    finally:
        writer.close()
    for path in rank_files:
        path.unlink()


def record_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return record["spec"], record["task"], record["id"]


class RecordWriter:
    """Appends records as JSON lines, each flushed and fsynced before the next batch starts."""

    def __init__(self, path: Path) -> None:
        cut_torn_tail(path)  # appends go after the last whole record
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        for record in records:
            self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def cut_torn_tail(path: Path) -> None:
    """Truncate ``path`` after its last newline (a crash mid-write leaves a partial line)."""
    if not path.is_file():
        return
    with open(path, "r+b") as f:
        pos = f.seek(0, os.SEEK_END)
        if pos == 0:
            return
        f.seek(pos - 1)
        if f.read(1) == b"\n":
            return
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            newline = f.read(step).rfind(b"\n")
            if newline >= 0:
                f.truncate(pos + newline + 1)
                return
        f.truncate(0)


class RunLock:
    """An exclusive ``flock`` on ``<out>/.lock``, held by one process (rank 0) while a run writes the folder;
    a second run there is refused. The file holds the holder and a token the other ranks check, which
    proves the folder is shared between them. The lock ends with the process, crash or not."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_FILE
        self.token = uuid.uuid4().hex
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 200).decode(errors="replace").split(" token ")[0].strip()
            os.close(self.fd)
            raise ValueError(f"{out_dir} is in use by another unmask run ({holder or 'unknown process'}); wait for "
                             "it to finish or use another output folder (under torchrun, every rank of one job "
                             "shares it)") from None
        except OSError:  # no locks on this filesystem, ...
            os.close(self.fd)
            raise
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"pid {os.getpid()} on {socket.gethostname()} token {self.token}\n".encode())
        os.fsync(self.fd)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1


def check_shared(out_dir: Path, token: str) -> str | None:
    """None if ``out_dir/.lock`` holds rank 0's ``token`` (this rank sees rank 0's folder), else the error."""
    path = out_dir / LOCK_FILE
    try:
        ok = path.is_file() and f"token {token}" in path.read_text(errors="replace")
    except OSError:
        ok = False
    if ok:
        return None
    return (f"{out_dir} on {socket.gethostname()} is not the folder rank 0 writes (no lock token of this job in "
            f"{path}); under torchrun --nnodes M put --out on a filesystem every node shares")


def check_run_file(out_dir: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix records of runs with other settings (``identity``: the ``RUN_KEYS`` values)."""
    run_path = out_dir / RUN_FILE
    if overwrite:
        for path in record_files(out_dir):
            path.unlink()
        for name in (RESULTS_JSON, RESULTS_MD, PARETO_PNG, RUN_FILE):
            (out_dir / name).unlink(missing_ok=True)
    elif run_path.is_file():
        previous = json.loads(run_path.read_text())
        diff = [f"{k}: {previous.get(k)!r} there, {v!r} now" for k, v in identity.items() if previous.get(k) != v]
        if diff:
            raise ValueError(
                f"{out_dir} holds records of a different run ({'; '.join(diff)}); "
                "use another output folder or overwrite it"
            )
    elif found := [p for p in record_files(out_dir) if p.stat().st_size]:
        raise ValueError(f"{found[0]} exists without {RUN_FILE}; use another output folder or overwrite it")
    run_path.write_text(json.dumps(identity, indent=2) + "\n")
