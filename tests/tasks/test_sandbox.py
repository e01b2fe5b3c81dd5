import os
import platform
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from unmask.tasks import sandbox
from unmask.tasks.sandbox import SandboxRefused, kill_uid, landlock_abi, pids_of_uid, run_python

ROOT = os.geteuid() == 0
LANDLOCK = landlock_abi()
root_only = pytest.mark.skipif(not ROOT, reason="per-run uid (and its sweep) needs a root evaluator")


def run_uid(r) -> int:
    return next(int(x.split(":")[1]) for x in r.layers if x.startswith("uid:"))


@pytest.fixture
def world_dir():
    """A world-writable dir under the system temp dir (traversable by any uid: unlike tmp_path)."""
    d = Path(tempfile.mkdtemp(prefix="unmask-probe-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def wait_for(pred, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


# ---------------------------------------------------------------- verdicts and limits


def test_passes_and_captures_output():
    r = run_python("def f(x):\n    return x + 1\n\nassert f(1) == 2\nprint('ok')")
    assert r.passed and r.status == "passed"
    assert "ok" in r.stdout


def test_assertion_failure():
    r = run_python("assert 1 == 2, 'boom'")
    assert not r.passed and r.status == "failed"
    assert "AssertionError" in r.stderr and "boom" in r.stderr


def test_runtime_exception_fails():
    r = run_python("def f(x):\n    return x / 0\nassert f(1) == 0")
    assert not r.passed and r.status == "failed" and "ZeroDivisionError" in r.stderr


def test_syntax_error():
    r = run_python("def f(:\n    return 1")
    assert not r.passed and r.status == "error" and "SyntaxError" in r.stderr
    r = run_python("def f():\nreturn 1")
    assert not r.passed and r.status == "error"


def test_timeout_infinite_loop():
    t = time.monotonic()
    r = run_python("while True:\n    pass", timeout_s=1.0)
    assert not r.passed and r.status == "timeout"
    assert time.monotonic() - t < 5


def test_timeout_sleep_and_children_killed():
    code = "import posix, time\nif posix.fork() == 0:\n    time.sleep(30)\ntime.sleep(30)"
    t = time.monotonic()
    r = run_python(code, timeout_s=1.0)
    assert r.status == "timeout" and time.monotonic() - t < 5
    if ROOT:
        assert pids_of_uid(run_uid(r)) == []


def test_memory_blowup():
    r = run_python("x = bytearray(8 * 1024 ** 3)\nassert False", memory_mb=256)
    assert not r.passed and r.status == "error" and "MemoryError" in r.stderr
    r = run_python("x = [0] * (10 ** 10)", memory_mb=256)
    assert not r.passed


def test_early_exit_is_not_a_pass():
    for code in ("import sys\nsys.exit(0)\nassert False", "import os\nos._exit(0)\nassert False", "raise SystemExit"):
        r = run_python(code)
        assert not r.passed, code
        assert r.status == "failed"


def test_faking_the_end_is_not_a_pass():
    r = run_python("print('__unmask_sandbox_done_0__')\nimport sys\nsys.exit(0)")
    assert not r.passed


def test_output_flood_is_bounded():
    r = run_python("while True:\n    print('x' * 100000)", timeout_s=3.0)
    assert not r.passed and len(r.stdout) <= 4000


def test_isolated_cwd_and_stdin():
    r = run_python("import os, sys\nassert os.listdir('.') == ['main.py'] or 'main.py' in os.listdir('.')\n"
                   "assert sys.stdin.read() == ''\nopen('scratch.txt', 'w').write('mine')\n"
                   "assert open('scratch.txt').read() == 'mine'\nos.mkdir('d')\nopen('d/x', 'w').write('y')\n"
                   "from typing import List\nimport math, re, collections, heapq, hashlib, itertools, functools")
    assert r.passed, r.stderr


def test_parallel_calls_from_threads():
    from concurrent.futures import ThreadPoolExecutor

    programs = [f"assert {i} * 2 == {2 * i}" if i % 2 else f"assert {i} == -1" for i in range(8)]
    fds = len(os.listdir("/proc/self/fd"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run_python, programs))
    assert [r.passed for r in results] == [bool(i % 2) for i in range(8)]
    assert len(os.listdir("/proc/self/fd")) == fds  # no pipe or pidfd left open
    if ROOT:
        assert len({run_uid(r) for r in results}) == 8  # a fresh uid per run


def test_layers_on_this_machine():
    r = run_python("assert 1")
    assert r.passed
    for layer in ("rlimits", "no-new-privs", "reliability-guard", "pgroup-kill"):
        assert layer in r.layers, r.layers
    if ROOT:
        assert {"netns", "ipcns", "tmpfs", "uid-sweep"} <= set(r.layers), r.layers
        assert run_uid(r) >= 1 << 15 and "socket-blocked" not in r.layers
    if LANDLOCK:
        assert "landlock" in r.layers
    if LANDLOCK >= 4:
        assert "landlock-net" in r.layers
    if LANDLOCK >= 6:
        assert "landlock-scope" in r.layers
    if sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64"):
        assert "seccomp" in r.layers


def test_reliability_guard_inner_layer():
    r = run_python("import os, shutil, subprocess, builtins\n"
                   "assert os.kill is None and os.remove is None and os.fork is None and os.system is None\n"
                   "assert shutil.rmtree is None and subprocess.Popen is None and builtins.help is None\n"
                   "try:\n    import resource\nexcept ImportError:\n    pass\nelse:\n    raise AssertionError\n")
    assert r.passed, r.stderr


# ---------------------------------------------------------------- hostile probes (files the tests create)

WRITE_PROBE = """
import posix
victim, fresh, moved, newdir = {victim!r}, {fresh!r}, {moved!r}, {newdir!r}
def write(): open(victim, 'w').write('pwned')
def append(): open(victim, 'a').write('pwned')
def create(): open(fresh, 'w').write('x')
probes = [write, append, create, lambda: posix.truncate(victim, 0), lambda: posix.rename(victim, moved),
          lambda: posix.link(victim, moved), lambda: posix.symlink(victim, moved), lambda: posix.mkdir(newdir),
          lambda: posix.unlink(victim)]
for i, probe in enumerate(probes):
    try:
        probe()
        print(i, 'DONE')
    except OSError as e:
        print(i, 'denied', e.errno)
"""


def test_probe_write_and_delete_outside(world_dir, monkeypatch):
    victim = world_dir / "victim.txt"
    kw = dict(victim=str(victim), fresh=str(world_dir / "fresh"), moved=str(world_dir / "moved"),
              newdir=str(world_dir / "newdir"))
    victim.write_text("original")
    victim.chmod(0o666)  # the dir and the file are world-writable: only Landlock stands in the way
    if not LANDLOCK:
        pytest.skip("no Landlock on this kernel: writes to world-writable places are not contained")
    r = run_python(WRITE_PROBE.format(**kw))
    assert r.passed, r.stderr
    assert "landlock" in r.layers
    assert "DONE" not in r.stdout and r.stdout.count("denied") == 9
    assert victim.read_text() == "original" and sorted(p.name for p in world_dir.iterdir()) == ["victim.txt"]
    # control: the same probe without Landlock does get through, so the probe is real
    monkeypatch.setattr(sandbox, "_SKIP", frozenset({"landlock"}))
    r = run_python(WRITE_PROBE.format(**kw))
    assert "landlock" not in r.layers and "DONE" in r.stdout


def test_probe_read_outside_python_and_system_dirs(world_dir, monkeypatch):
    """World-readable files outside the system's and Python's dirs (data, home dirs, /tmp) are not readable."""
    note = world_dir / "notes.txt"
    note.write_text("world-readable " + os.urandom(8).hex())
    note.chmod(0o644)
    code = f"try:\n    print(open({str(note)!r}).read())\nexcept OSError as e:\n    print('denied', e.errno)\n"
    if LANDLOCK < 1:
        pytest.skip("no Landlock on this kernel: every world-readable file is readable")
    r = run_python(code)
    assert "landlock-read" in r.layers and "denied 13" in r.stdout and note.read_text() not in r.stdout
    monkeypatch.setattr(sandbox, "_SKIP", frozenset({"landlock-read"}))  # control: the file is readable otherwise
    r = run_python(code)
    assert "landlock-read" not in r.layers and note.read_text() in r.stdout


@root_only
def test_probe_read_secret(world_dir):
    secret = world_dir / "key.pem"
    token = "SECRET-" + os.urandom(8).hex()
    secret.write_text(token)
    secret.chmod(0o600)
    code = (f"import posix\nfor read in (lambda: open({str(secret)!r}).read(), "
            f"lambda: posix.read(posix.open({str(secret)!r}, posix.O_RDONLY), 100).decode()):\n"
            "    try:\n        print(read())\n    except OSError as e:\n        print('denied', e.errno)\n")
    r = run_python(code)
    assert token not in r.stdout and token not in r.stderr
    assert r.stdout.count("denied 13") == 2


def test_probe_network():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    port, uport = srv.getsockname()[1], udp.getsockname()[1]
    code = f"""
import _socket, socket
def udp(): _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM).sendto(b'hi', ('127.0.0.1', {uport}))
for label, fn in (('tcp', lambda: _socket.socket().connect(('127.0.0.1', {port}))),
                  ('tcp2', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2)), ('udp', udp)):
    try:
        fn()
        print(label, 'CONNECTED')
    except OSError as e:
        print(label, 'blocked', e)
"""
    try:
        r = run_python(code)
        assert "CONNECTED" not in r.stdout and r.stdout.count("blocked") == 3, r.stdout + r.stderr
        assert select.select([srv], [], [], 0.2)[0] == []  # no connection was ever accepted
        with pytest.raises(BlockingIOError):
            udp.recv(10)
    finally:
        srv.close()
        udp.close()


def test_probe_network_without_netns(monkeypatch):
    """Where no network namespace can be made: the socket module is blocked, and Landlock refuses TCP."""
    monkeypatch.setattr(sandbox, "_SKIP", frozenset({"netns"}))
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    code = ("import socket, _socket\ntry:\n    socket.socket()\nexcept PermissionError:\n    print('module blocked')\n"
            f"try:\n    _socket.socket().connect(('127.0.0.1', {port}))\n    print('CONNECTED')\n"
            "except OSError as e:\n    print('tcp blocked', e.errno)\n")
    try:
        r = run_python(code)
        assert "socket-blocked" in r.layers and "netns" not in r.layers and "module blocked" in r.stdout
        if LANDLOCK >= 4:
            assert "CONNECTED" not in r.stdout and select.select([srv], [], [], 0.2)[0] == []
    finally:
        srv.close()


def test_probe_signal_the_evaluator():
    victim = subprocess.Popen(["sleep", "30"])  # a process of the evaluator's uid that the test owns
    code = f"""
import ctypes, os, posix, signal
libc = ctypes.CDLL(None, use_errno=True)
for pid in (os.getppid(), {victim.pid}):
    try:
        posix.kill(pid, 0)
        print('SIGNALLED', pid)
    except OSError as e:
        print('posix denied', e.errno)
    print('ctypes', libc.kill(pid, signal.SIGKILL), ctypes.get_errno())
try:
    os.kill(os.getppid(), 0)
except TypeError:
    print('guarded')
"""
    try:
        r = run_python(code)
        assert "SIGNALLED" not in r.stdout and r.stdout.count("ctypes -1 1") == 2, r.stdout + r.stderr
        assert "guarded" in r.stdout
        assert victim.poll() is None  # still alive
    finally:
        victim.kill()
        victim.wait()


ESCAPE = """
import posix, time
if posix.fork() == 0:
    posix.setsid()
    if posix.fork() == 0:
        time.sleep(1.5)
        open({target!r}, 'w').write('escaped')
        time.sleep(60)
    posix._exit(0)
"""


@root_only
def test_probe_setsid_double_fork(world_dir, monkeypatch):
    """The grandchild leaves the process group; the uid sweep still gets it (Landlock off, or it could not write)."""
    control, probe = world_dir / "control", world_dir / "probe"
    monkeypatch.setattr(sandbox, "_SKIP", frozenset({"landlock", "uid-sweep"}))
    rc = run_python(ESCAPE.format(target=str(control)))
    monkeypatch.setattr(sandbox, "_SKIP", frozenset({"landlock"}))
    r = run_python(ESCAPE.format(target=str(probe)))
    returned = time.monotonic()
    try:
        assert r.passed and rc.passed and "uid-sweep" in r.layers and "uid-sweep" not in rc.layers
        assert pids_of_uid(run_uid(r)) == []
        assert wait_for(control.exists, 4.0)  # without the sweep the escape works
        assert not wait_for(probe.exists, returned + 4.0 - time.monotonic())  # 4 s after the probe returned
    finally:
        assert kill_uid(run_uid(rc))


FORK_BOMB = """
import posix, time
n = 0
while True:
    try:
        pid = posix.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(0.3)
        while True:
            try:
                posix.fork()
            except OSError:
                pass
    n += 1
print('forked', n, flush=True)
while True:
    pass
"""


def test_probe_fork_bomb():
    t = time.monotonic()
    r = run_python(FORK_BOMB, timeout_s=1.5)
    assert r.status == "timeout" and time.monotonic() - t < 8
    if ROOT:
        assert int(r.stdout.split("forked")[1].split()[0]) < sandbox._NPROC
        assert pids_of_uid(run_uid(r)) == []
    assert run_python("assert 1").passed  # the evaluator is fine


FORGE = """
import os, sys
loot = []
for name in os.listdir('.'):
    try:
        loot.append(open(name, errors='replace').read())
    except OSError:
        pass
for name in ('/proc/self/cmdline', '/proc/self/environ'):
    loot.append(open(name, errors='replace').read())
text = '\\n'.join(loot)
markers = [w for w in text.replace('\\x00', ' ').replace("'", ' ').split() if 'unmask' in w or 'done' in w]
payload = ('\\n'.join(markers + ['__unmask_sandbox_done_0__', text[-2000:]]) + '\\n').encode()
print(text)
fds = [int(fd) for fd in os.listdir('/proc/self/fd')]
for fd in sorted(set(range(21)) | set(fds)):
    try:
        os.write(fd, payload)
    except OSError:
        pass
sys.stdout.flush()
os._exit(0)
assert False
"""


def test_probe_forged_verdict():
    r = run_python(FORGE, timeout_s=30.0)  # a loaded machine must not turn it into a timeout
    assert not r.passed and r.status == "failed"
    assert "__unmask_sandbox_done_0__" in r.stdout  # it did print its forgery
    # junk written to every low fd, then an exit before the failing test: not a pass either (a program that
    # ends normally after the junk may pass or fail, depending on whether the junk hit the verdict pipe)
    r = run_python("import os\nfor fd in range(3, 21):\n    try:\n        os.write(fd, b'x' * 64)\n"
                   "    except OSError:\n        pass\nos._exit(0)\nassert False\n")
    assert not r.passed


def test_the_issue_forgery_scores_zero_on_the_tasks(tmp_path):
    """Read the end-of-run marker out of main.py, print it, os._exit(0): scored 1.0 before; now 0."""
    import gzip
    import json

    from unmask.tasks import get_task
    from unmask.tasks.code import CodeTask

    forge = ("    import os, re\n    for m in re.findall(r'__unmask\\w+', open('main.py').read()):\n"
             "        print(m, flush=True)\n    os._exit(0)\n")
    task = CodeTask()
    ex = task.examples("test", 1)[0]
    header = ex.target.split("\n")[0]
    assert task.score(ex, ex.target) == 1.0 and task.score(ex, header + "\n" + forge) == 0.0
    row = {"task_id": "HumanEval/0", "prompt": "def add_all(xs):\n    \"\"\"Sum.\"\"\"\n",
           "canonical_solution": "    return sum(xs)\n", "entry_point": "add_all",
           "test": "def check(candidate):\n    assert candidate([1, 2]) == 3\n"}
    path = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(row) + "\n")
    he = get_task("humaneval", path=path)
    (ex,) = he.examples("test", 1)
    assert he.score(ex, row["canonical_solution"]) == 1.0 and he.score(ex, forge) == 0.0


def test_environment_is_scrubbed(monkeypatch):
    token = "evaluator-secret-" + os.urandom(6).hex()
    monkeypatch.setenv("UNMASK_PROBE_TOKEN", token)
    code = ("import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ').read())\n"
            "try:\n    print(open(f'/proc/{os.getppid()}/environ').read())\nexcept OSError as e:\n"
            "    print('parent environ denied', e.errno)\n")
    r = run_python(code)
    assert token not in r.stdout and token not in r.stderr
    assert "parent environ denied" in r.stdout
    env = eval(r.stdout.split("\n")[0])
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "OMP_NUM_THREADS", "LC_CTYPE", *sandbox._NUMPY_ENV}, env


@root_only
def test_tmpfs_bounds_disk():
    code = ("n = 0\ntry:\n    while True:\n        open(f'f{n}', 'wb').write(b'x' * (8 << 20))\n        n += 1\n"
            "except OSError as e:\n    print('full after', n, e.errno)\n")
    r = run_python(code, timeout_s=10)
    assert "tmpfs" in r.layers and "full after" in r.stdout
    assert int(r.stdout.split()[2]) <= sandbox._DISK_MB // 8


@root_only
def test_refuses_root_when_the_uid_switch_fails(monkeypatch):
    monkeypatch.delenv("UNMASK_SANDBOX_ALLOW_ROOT", raising=False)
    monkeypatch.setattr(sandbox, "_SKIP", frozenset({"uid-drop"}))
    with pytest.raises(SandboxRefused, match="refusing to run untrusted code as root.*allow_root=True.*"
                                             "UNMASK_SANDBOX_ALLOW_ROOT=1"):
        run_python("open('ran', 'w')")
    r = run_python("import os\nassert os.geteuid() == 0", allow_root=True)  # the explicit opt-out
    assert r.passed and "root" in r.layers and not any(x.startswith("uid:") for x in r.layers)
    monkeypatch.setenv("UNMASK_SANDBOX_ALLOW_ROOT", "1")
    assert run_python("assert 1").passed
    monkeypatch.delenv("UNMASK_SANDBOX_ALLOW_ROOT")
    monkeypatch.setattr(sandbox, "_SKIP", frozenset())
    monkeypatch.setattr(sandbox, "_pick_ids", lambda: None)  # no unprivileged uid mapped
    with pytest.raises(SandboxRefused, match="no unprivileged uid"):
        run_python("assert 1")
    assert run_python("assert 1", allow_root=True).passed


seccomp = pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64")),
                             reason="the seccomp filter is built for Linux x86-64 and arm64")


@seccomp
def test_probe_unix_socket_file(world_dir):
    """A 0777 unix socket in a directory the evaluator made: the network namespace does not cover socket files;
    the seccomp filter refuses the socket itself, so nothing connects and no byte arrives."""
    path = world_dir / "evaluator.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    path.chmod(0o777)
    srv.listen(4)
    code = f"""
import _socket
for kind in (_socket.SOCK_STREAM, _socket.SOCK_DGRAM):
    try:
        s = _socket.socket(_socket.AF_UNIX, kind)
        s.connect({str(path)!r})
        s.send(b'escaped')
        print('CONNECTED')
    except OSError as e:
        print('blocked', e.errno)
"""
    try:
        r = run_python(code)
        assert "CONNECTED" not in r.stdout and r.stdout.count("blocked") == 2, r.stdout + r.stderr
        assert select.select([srv], [], [], 0.2)[0] == []  # no connection was ever accepted
    finally:
        srv.close()


@seccomp
def test_probe_memfd_outside_the_memory_cap():
    code = """
import os
try:
    fd = os.memfd_create('hoard')
    os.ftruncate(fd, 900 << 20)
    os.write(fd, b'x' * (64 << 20))
    print('HOARDED')
except OSError as e:
    print('blocked', e.errno)
"""
    r = run_python(code, memory_mb=512)
    assert "HOARDED" not in r.stdout and "blocked 1" in r.stdout, r.stdout + r.stderr


@root_only
@pytest.mark.skipif(not LANDLOCK, reason="hiding /proc needs Landlock")
def test_probe_other_processes_argv():
    marker = "secret-token-" + os.urandom(4).hex()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    code = f"""
import os
for probe in (lambda: open('/proc/{other.pid}/cmdline', 'rb').read(), lambda: os.listdir('/proc'),
              lambda: open('/proc/1/cmdline', 'rb').read()):
    try:
        print('READ', probe())
    except OSError as e:
        print('blocked', e.errno)
print(open('/proc/self/status').read().split()[0])  # its own entry stays readable
"""
    try:
        r = run_python(code)
        assert marker not in r.stdout and "READ" not in r.stdout and r.stdout.count("blocked") == 3, r.stdout
        assert "Name:" in r.stdout, r.stdout + r.stderr
    finally:
        other.kill()
        other.wait()
