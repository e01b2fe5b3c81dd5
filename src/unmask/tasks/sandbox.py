"""Run untrusted Python in a subprocess with wall-time, CPU, memory and output limits.

Not a security boundary (no namespaces or seccomp): it protects the evaluator from infinite
loops, memory blow-ups, crashes and early exits in model-written code. A run counts as passed
only if the process exits 0 *and* prints a random sentinel appended after the code, so
`sys.exit(0)` or `os._exit(0)` before the tests cannot pass. The limits are set by a short
bootstrap inside the child before it runs the code (no `preexec_fn`, which CPython documents as
unsafe with threads), so `run_python` may be called from several threads at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timeout", "error"]
_OUTPUT_LIMIT = 16 << 20  # bytes per output file (RLIMIT_FSIZE)
_TAIL = 4000  # characters of stderr kept in the result
_ERROR_MARKERS = ("SyntaxError", "IndentationError", "TabError", "MemoryError")


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: Status  # "passed" | "failed" (assertion/exception/early exit) | "timeout" | "error"
    stderr: str
    stdout: str = ""


def _bootstrap(memory_mb: int, cpu_s: int) -> str:
    """``python -c`` source: lower the soft (and unlimited hard) rlimits, then run ``main.py`` as ``__main__``."""
    return (
        "import resource as _r\n"
        "def _lim(which, value):\n"
        "    _, hard = _r.getrlimit(which)\n"
        "    if hard != _r.RLIM_INFINITY:\n"
        "        value = min(value, hard)\n"
        "    _r.setrlimit(which, (value, hard if hard != _r.RLIM_INFINITY else value))\n"
        f"_lim(_r.RLIMIT_AS, {memory_mb << 20}); _lim(_r.RLIMIT_CPU, {cpu_s})\n"
        f"_lim(_r.RLIMIT_FSIZE, {_OUTPUT_LIMIT}); _lim(_r.RLIMIT_CORE, 0)\n"
        "del _r, _lim\n"
        "__file__ = 'main.py'\n"
        "exec(compile(open('main.py', encoding='utf-8').read(), 'main.py', 'exec'))\n"
    )


def _tail(path: Path, n: int) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 4 * n))
        return f.read().decode("utf-8", errors="replace")[-n:]


def run_python(code: str, timeout_s: float = 5.0, memory_mb: int = 512) -> SandboxResult:
    """Execute `code` with `python -I` in a fresh temp dir; see module docstring for the rules."""
    sentinel = f"__unmask_sandbox_done_{uuid.uuid4().hex}__"
    program = f"{code}\n\nprint({sentinel!r}, flush=True)\n"
    with tempfile.TemporaryDirectory(prefix="unmask-sandbox-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        (root / "main.py").write_text(program, encoding="utf-8")
        out_path, err_path = root / "stdout.txt", root / "stderr.txt"
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8",
               "OMP_NUM_THREADS": "1"}
        timed_out = False
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _bootstrap(memory_mb, int(timeout_s) + 1)], cwd=tmp, env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
            )
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:  # the whole process group: also children the code may have spawned
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        stdout, stderr = _tail(out_path, _TAIL), _tail(err_path, _TAIL)
    rc = proc.returncode
    if timed_out or rc in (-signal.SIGXCPU, -signal.SIGKILL):
        return SandboxResult(False, "timeout", stderr, stdout)
    lines = stdout.rstrip("\n").split("\n")
    if rc == 0 and lines[-1] == sentinel:
        return SandboxResult(True, "passed", stderr, stdout)
    last = stderr.strip().split("\n")[-1] if stderr.strip() else ""
    if rc < 0 or any(m in last for m in _ERROR_MARKERS):
        return SandboxResult(False, "error", stderr, stdout)
    return SandboxResult(False, "failed", stderr, stdout)
