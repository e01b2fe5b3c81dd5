"""Run model-written Python (a completion plus its tests) in a contained subprocess.

A *benchmark* sandbox: it keeps buggy or reward-hacking completions from hurting the evaluator,
the machine or the score. It is not a security boundary for adversarial code written by someone
who knows unmask's internals (see "Not contained").

How a run works. `run_python` writes the program to ``main.py`` in a fresh temp dir and starts
``python -I -c <bootstrap>`` there in a new session, with a scrubbed environment and stdin from
/dev/null. The bootstrap (trusted code, `_child` below; no ``preexec_fn``, so `run_python` is
safe to call from several threads at once) sets up these layers, in order, then runs the program;
`SandboxResult.layers` names the ones that were active:

- ``rlimits``: address space, CPU seconds, file size (output files), core 0, 64 fds, and
  ``RLIMIT_NPROC`` (64 processes; it binds only a non-root uid, see below).
- ``no-new-privs``: setuid binaries and file capabilities grant nothing.
- ``netns`` (+ ``ipcns``): a new network namespace (only a loopback that is down) and IPC
  namespace. As root plainly; unprivileged through a user namespace (``userns``) where the
  kernel allows it. Without it: ``socket-blocked`` (the ``socket`` module's constructors raise;
  in-process only, ``_socket`` or ctypes get past it) and TCP is still refused by
  ``landlock-net`` where the kernel has it.
- ``tmpfs``: the temp dir is a private 64 MiB tmpfs (mount namespace), so filling the disk or
  inode table is bounded.
- ``landlock``: a Landlock ruleset (ABI 1+) that forbids every write, create, remove, rename,
  link and truncate outside the temp dir (and /dev/null). ``landlock-read``: reading is allowed
  only in the temp dir, Python's dirs (prefixes and ``sys.path``) and the system's (/usr, /lib*,
  /bin, /sbin, /sys, a few /dev nodes, the /etc files the C library and stdlib read, and /proc: its
  own entry only for a root evaluator, so other processes' command lines are hidden), so data,
  checkpoints, home dirs and /tmp are out of sight. ``landlock-net`` (ABI 4+): no TCP bind
  or connect. ``landlock-scope`` (ABI 6+): no signals to processes outside the sandbox, no
  abstract unix sockets outside it.
- ``seccomp`` (Linux x86-64 and arm64): a seccomp filter refuses (EPERM) ``socket(AF_UNIX, ...)``, so
  a unix socket file in reach (one in a world-readable dir) cannot be connected to past the network
  namespace, and ``memfd_create``, whose memory ``RLIMIT_AS`` does not count.
- ``uid:<n>`` (evaluator running as root): the child switches to a fresh unprivileged uid/gid
  (no supplementary groups) for this run only. Files of root (0600 keys) become unreadable,
  signalling the evaluator fails with EPERM, ``RLIMIT_NPROC`` bounds a fork bomb, and after the
  run the evaluator sweeps /proc and SIGKILLs every process with that uid (``uid-sweep``), which
  catches ``setsid`` + double-fork escapes. If the switch fails, `run_python` refuses to run the
  code as root (`SandboxRefused`) unless ``allow_root=True`` or ``UNMASK_SANDBOX_ALLOW_ROOT=1``
  (then ``root`` in the layers). An unprivileged evaluator runs the code as its own uid
  (``same-uid``); its ``RLIMIT_NPROC`` then counts the run's processes inside a user namespace,
  else all of the user's processes (set to their number + 64).
- ``reliability-guard``: OpenAI human-eval's ``reliability_guard`` semantics (destructive
  ``os``/``shutil``/``subprocess`` functions, ``exit``/``quit``/``help`` and a few modules set to
  None). An inner layer against accidents only: ``posix.*``/ctypes get past it.
- ``pgroup-kill``: the child's process group is SIGKILLed when the run ends.

The verdict. A run passes only if the tests ran to their end: the parent hands the bootstrap a
random per-run nonce through a pipe (never on disk, in argv or in the environment), the
bootstrap runs the program with ``exec`` and, only if that returns normally, writes the nonce to
a second pipe; the parent needs exactly the nonce there *and* exit status 0. Printing anything,
writing to any fd, reading every file in reach or exiting early (``os._exit(0)``) cannot pass.

The guard keeps human-eval's side effects: code that needs ``subprocess``, ``os.getcwd`` (so
``tempfile`` and ``os.path.abspath`` of relative paths) or ``os.putenv`` fails, as it does there.

Not contained:
- Code that inspects the bootstrap's own memory (frames, ``gc``, /proc/self/mem) can find the
  nonce and forge a pass, and code that games the tests in-process (an object equal to
  everything, patched builtins, ``sys.settrace``) can pass them: the tests share a process with
  the code under test. Scores stay honest for model-written code, not for an adversary.
- What stays readable: Python's and the system's dirs, /etc/passwd among them (other processes'
  command lines in /proc only for an unprivileged evaluator). Without Landlock (kernel < 5.13 or disabled) every
  world-readable file; as the evaluator's own uid (unprivileged evaluator) also that user's files.
- Without Landlock a root evaluator's per-run uid can still write to world-writable places (/tmp,
  /dev/shm), and an unprivileged evaluator's code can write wherever that user can. Without a
  network namespace, UDP sockets stay reachable past the in-process block. An
  unprivileged evaluator gets no uid sweep (a setsid + double-fork child can outlive the run) and,
  without ``landlock-scope``, its code can signal that user's processes, the evaluator included.
- CPU time, memory bandwidth and page cache are shared with the host; kernel bugs are out of scope.
"""

from __future__ import annotations

import inspect
import os
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Literal

Status = Literal["passed", "failed", "timeout", "error"]
_OUTPUT_LIMIT = 16 << 20  # bytes per file the child writes (RLIMIT_FSIZE): stdout/stderr floods
_TAIL = 4000  # characters of stdout/stderr kept in the result
_NOFILE = 64
_NPROC = 64  # processes (and threads) of the run's uid
_DISK_MB = 64  # size of the run's tmpfs
_ERROR_MARKERS = ("SyntaxError", "IndentationError", "TabError", "MemoryError")
_ALLOW_ROOT_ENV = "UNMASK_SANDBOX_ALLOW_ROOT"
_NUMPY_ENV = {"OPENBLAS_MAIN_FREE": "1", "GOTOBLAS_MAIN_FREE": "1"}  # set: numpy's import would putenv them
_SKIP: frozenset[str] = frozenset()  # tests only: layers to leave out ("netns", "tmpfs", "landlock",
# "landlock-read", "uid-sweep") or to make fail ("uid-drop")
_IDS_LOCK = threading.Lock()
_IDS_IN_USE: set[int] = set()  # per-run uids of runs in flight in this process (or whose processes survived)


class SandboxRefused(RuntimeError):
    """The evaluator runs as root and the child could not switch to an unprivileged uid."""


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: Status  # "passed" | "failed" (assertion/exception/early exit) | "timeout" | "error"
    stderr: str  # tails (last _TAIL characters)
    stdout: str = ""
    layers: tuple[str, ...] = ()  # containment layers that were active (see the module docstring)


def _child(argv):  # pragma: no cover - the bootstrap; runs as `python -I -c` inside the sandbox
    """Set up the layers, run ``main.py`` as ``__main__``, write the nonce iff it returned.

    Self-contained (stdlib only, no module globals): its source is what the child runs.
    argv: nonce_fd info_fd verdict_fd mem_bytes cpu_s fsize nofile nproc uid gid disk_mb box flags.
    """
    import os
    import sys

    nonce_fd, info_fd, verdict_fd, mem, cpu, fsize, nofile, nproc, uid, gid, disk_mb = map(int, argv[:11])
    box, flags = argv[11], set(argv[12].split(",")) - {""}
    nonce = os.read(nonce_fd, 256)
    os.close(nonce_fd)
    layers = []

    def report(text):  # the info pipe: closed before any untrusted code runs
        os.write(info_fd, text.encode())
        os.close(info_fd)

    import resource

    def limit(which, value):
        hard = resource.getrlimit(which)[1]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    limit(resource.RLIMIT_AS, mem)
    limit(resource.RLIMIT_CPU, cpu)
    limit(resource.RLIMIT_FSIZE, fsize)
    limit(resource.RLIMIT_CORE, 0)
    limit(resource.RLIMIT_NOFILE, nofile)
    layers.append("rlimits")
    with open("main.py", encoding="utf-8") as f:
        source = f.read()
    root = os.geteuid() == 0
    own_uid, own_gid = os.getuid(), os.getgid()
    python_path = [path for path in sys.path if os.path.isabs(path)]
    linux = sys.platform.startswith("linux")
    if linux:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        if libc.prctl(38, 1, 0, 0, 0) == 0:  # PR_SET_NO_NEW_PRIVS
            layers.append("no-new-privs")
        newns, newipc, newuser, newnet = 0x20000, 0x8000000, 0x10000000, 0x40000000
        mountns = False
        if "netns" not in flags:
            if root:
                if libc.unshare(newnet) == 0:
                    layers.append("netns")
                if libc.unshare(newipc) == 0:
                    layers.append("ipcns")
                mountns = libc.unshare(newns) == 0
            elif libc.unshare(newuser | newnet | newipc | newns) == 0:
                try:  # map our own ids into the new user namespace (its capabilities go after the mounts)
                    for name, text in (("setgroups", "deny"), ("uid_map", f"{own_uid} {own_uid} 1"),
                                       ("gid_map", f"{own_gid} {own_gid} 1")):
                        with open(f"/proc/self/{name}", "w") as f:
                            f.write(text)
                except OSError:
                    pass
                layers += ["userns", "netns", "ipcns"]
                mountns = True
        if mountns and "tmpfs" not in flags:
            ms_nosuid, ms_nodev, ms_rec, ms_private = 2, 4, 1 << 14, 1 << 18
            opts = f"size={disk_mb}m,nr_inodes=4096,mode=0700" + (f",uid={uid},gid={gid}" if uid >= 0 else "")
            if (libc.mount(b"none", b"/", None, ms_rec | ms_private, None) == 0
                    and libc.mount(b"tmpfs", box.encode(), b"tmpfs", ms_nosuid | ms_nodev, opts.encode()) == 0):
                os.chdir(box)
                with open("main.py", "w", encoding="utf-8") as f:
                    f.write(source)
                layers.append("tmpfs")
        if "userns" in layers:  # the namespace's capabilities were for the mounts: drop them all
            hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
            if libc.capset(hdr, (ctypes.c_uint32 * 6)()) != 0:  # cannot drop them: do not run the code
                os.write(2, b"unmask sandbox: could not drop capabilities in the user namespace\n")
                os._exit(112)
        if uid >= 0:  # the new uid cannot walk into a private install (e.g. /root/.pyenv): keep dir fds
            def reachable(path):
                parts = os.path.realpath(path).split("/")
                need = [0o001] * (len(parts) - 1) + [0o005]  # walk every ancestor, list the dir itself
                return all(os.stat("/".join(parts[:i + 1]) or "/").st_mode & m == m for i, m in enumerate(need))

            moved = {}
            for path in sys.path:
                if path not in moved and os.path.isdir(path) and not reachable(path):
                    moved[path] = f"/proc/self/fd/{os.open(path, os.O_RDONLY | os.O_DIRECTORY)}"

            def remap(path):
                for old, new in moved.items():
                    if path == old or path.startswith(old + "/"):
                        return new + path[len(old):]
                return path

            sys.path[:] = map(remap, sys.path)
            for module in list(sys.modules.values()):  # packages already imported (encodings.* load lazily)
                if isinstance(getattr(module, "__path__", None), list):
                    module.__path__[:] = map(remap, module.__path__)
            sys.path_importer_cache.clear()
        abi = -1 if "landlock" in flags else libc.syscall(444, None, 0, 1)  # landlock_create_ruleset: ABI
        if abi >= 1:
            write_file, read_file, read_dir, truncate = 1 << 1, 1 << 2, 1 << 3, 1 << 14
            fs = write_file | sum(1 << b for b in range(4, 13))  # remove dir/file, make char..sym
            fs |= (1 << 13 if abi >= 2 else 0) | (truncate if abi >= 3 else 0)  # refer, truncate
            reads = read_file | read_dir if "landlock-read" not in flags else 0
            net = 3 if abi >= 4 else 0  # bind/connect TCP: handled, no rule allows them
            scoped = 3 if abi >= 6 else 0  # abstract unix sockets, signals
            attr = (ctypes.c_uint64 * 3)(fs | reads, net, scoped)
            ruleset = libc.syscall(444, ctypes.byref(attr), ctypes.sizeof(attr), 0)

            class PathBeneath(ctypes.Structure):
                _pack_ = 1
                _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

            def allow(path, access):
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    return False
                if not os.path.isdir(path):
                    access &= write_file | read_file | truncate  # the rights a file rule may carry
                ok = libc.syscall(445, ruleset, 1, ctypes.byref(PathBeneath(access, fd)), 0) == 0
                os.close(fd)
                return ok

            ok = ruleset >= 0 and allow(box, fs | reads) and allow("/dev/null", write_file | truncate | reads)
            # /proc: a root evaluator's run reads its own entry only (other processes' command lines stay
            # hidden); an unprivileged evaluator's needs the list to count its uid's processes (RLIMIT_NPROC)
            proc = "/proc/self" if root else "/proc"
            if ok and reads:  # reading: the system's dirs and Python's, not home dirs, /tmp, /work, /srv ...
                for path in ({"/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", proc, "/sys",
                              "/nix/store", "/gnu/store", sys.prefix, sys.base_prefix, sys.exec_prefix,
                              sys.base_exec_prefix, *python_path}
                             | {f"/dev/{name}" for name in ("zero", "full", "random", "urandom")}
                             | {f"/etc/{name}" for name in (
                                 "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "passwd",
                                 "group", "nsswitch.conf", "os-release", "mime.types", "locale.alias", "ssl",
                                 "host.conf", "hosts", "resolv.conf", "gai.conf", "protocols", "services")}):
                    if os.path.exists(path):
                        allow(path, reads)
            if ok and libc.syscall(446, ruleset, 0) == 0:  # landlock_restrict_self
                layers += (["landlock"] + ["landlock-read"] * bool(reads) + ["landlock-net"] * bool(net)
                           + ["landlock-scope"] * bool(scoped))
            if ruleset >= 0:
                os.close(ruleset)
    if uid >= 0:
        try:
            if "uid-drop" in flags:
                raise PermissionError(1, "uid drop disabled by a test")
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            if os.getresuid() != (uid,) * 3 or os.getresgid() != (gid,) * 3 or os.getgroups():
                raise PermissionError(1, f"ids after the switch: {os.getresuid()} {os.getresgid()} {os.getgroups()}")
            if linux:
                libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: /proc/<pid> owned by the new uid
            layers.append(f"uid:{uid}")
        except OSError as e:
            if "allow-root" not in flags:
                report(f"refused:could not switch to uid/gid {uid} ({e})")
                os._exit(0)
            layers.append("root")
    elif root:
        layers.append("root")
    else:
        layers.append("same-uid")
    if linux and "seccomp" not in flags:  # a filter: no unix-domain socket (a socket file past the network
        # namespace), no memfd (memory outside RLIMIT_AS); both fail with EPERM
        import platform

        arch, nr_socket, nr_memfd = {"x86_64": (0xC000003E, 41, 319), "aarch64": (0xC00000B7, 198, 279)}.get(
            platform.machine(), (None, None, None))
        if arch is not None:
            allow_all, refuse = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
            program = [  # (code, jt, jf, k); jumps count from the next instruction
                (0x20, 0, 0, 4),  # A = seccomp_data.arch
                (0x15, 0, 5, arch),  # another architecture: allow (7)
                (0x20, 0, 0, 0),  # A = seccomp_data.nr
                (0x15, 4, 0, nr_memfd),  # memfd_create: refuse (8)
                (0x15, 0, 2, nr_socket),  # not socket(): allow (7)
                (0x20, 0, 0, 16),  # A = low word of args[0], the address family
                (0x15, 1, 0, 1),  # AF_UNIX: refuse (8)
                (0x06, 0, 0, allow_all),
                (0x06, 0, 0, refuse),
            ]

            class SockFilter(ctypes.Structure):
                _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                            ("k", ctypes.c_uint32)]

            class SockFprog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

            filters = (SockFilter * len(program))(*(SockFilter(*op) for op in program))
            fprog = SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(SockFilter)))
            if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
                layers.append("seccomp")
    own = 0
    if not root and "userns" not in layers and linux:  # RLIMIT_NPROC counts every process of the uid
        for pid in os.listdir("/proc"):
            try:
                own += pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == os.getuid()
            except OSError:
                pass
    limit(resource.RLIMIT_NPROC, nproc + own)

    # OpenAI human-eval's reliability_guard, restated: disable destructive / escaping calls.
    import builtins
    import faulthandler
    import importlib.machinery

    write = os.write
    faulthandler.disable()
    for name in ("exit", "quit", "help"):
        setattr(builtins, name, None)
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
                 "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
                 "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        if hasattr(os, name):
            setattr(os, name, None)
    patches = {"shutil": ("rmtree", "move", "chown"), "subprocess": ("Popen",)}

    class Guard:  # patch shutil/subprocess when imported (importing both up front costs ~15 ms a run)
        @staticmethod
        def find_spec(name, path=None, target=None):
            spec = importlib.machinery.PathFinder.find_spec(name, path) if name in patches else None
            if spec is not None and spec.loader is not None:
                load = spec.loader.exec_module

                def exec_module(module, load=load, attrs=patches[name]):
                    load(module)
                    for attr in attrs:
                        setattr(module, attr, None)

                spec.loader.exec_module = exec_module
            return spec

    for name, attrs in patches.items():
        for attr in attrs if name in sys.modules else ():
            setattr(sys.modules[name], attr, None)
    sys.meta_path.insert(0, Guard)
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None
    layers.append("reliability-guard")
    if "netns" not in layers:
        import socket

        def blocked(*args, **kwargs):
            raise PermissionError(13, "network access is disabled in the sandbox")

        for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd"):
            setattr(socket, name, blocked)
        layers.append("socket-blocked")
    report("\n".join(layers))

    def seal(token):
        def finish():
            write(verdict_fd, token)

        return finish

    finish = seal(nonce)
    del nonce
    import types

    main = types.ModuleType("__main__")
    main.__file__ = "main.py"
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    exec(compile(source, "main.py", "exec"), main.__dict__)
    finish()


_BOOTSTRAP = inspect.getsource(_child) + "\n_child(__import__('sys').argv[1:])\n"


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none, or not Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return max(0, libc.syscall(444, None, 0, 1))


def _id_ranges(path: str) -> list[tuple[int, int]]:
    try:
        with open(path) as f:
            rows = [tuple(map(int, line.split())) for line in f if line.strip()]
    except OSError:
        return []
    return [(inside, inside + count) for inside, _, count in rows]


def _pick_ids() -> int | None:
    """A uid (= gid) for one run: mapped in this user namespace, not in use by this process's runs."""
    uids, gids = _id_ranges("/proc/self/uid_map"), _id_ranges("/proc/self/gid_map")
    for lo, hi in ((1 << 20, 1 << 31), (1 << 15, 65534)):
        spans = [(max(a, c, lo), min(b, d, hi)) for a, b in uids for c, d in gids]
        spans = [(a, b) for a, b in spans if a < b]
        if spans:
            break
    else:
        return None
    with _IDS_LOCK:
        for _ in range(100):
            a, b = spans[secrets.randbelow(len(spans))]
            n = a + secrets.randbelow(b - a)
            if n not in _IDS_IN_USE:
                _IDS_IN_USE.add(n)
                return n
    return None


def _status_of(pid: int | str) -> tuple[bytes, list[bytes]]:
    with open(f"/proc/{pid}/status", "rb") as f:
        state, uids = b"", []
        for line in f:
            if line.startswith(b"State:"):
                state = line.split()[1]
            elif line.startswith(b"Uid:"):
                uids = line.split()[1:]
                break
    return state, uids


def pids_of_uid(uid: int) -> list[int]:
    """Live (not zombie) processes with `uid` as real, effective, saved or filesystem uid."""
    key, found = str(uid).encode(), []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid not in (uid, 0, 65534):  # non-dumpable: root (or overflow id)
                continue
            state, uids = _status_of(name)
        except OSError:
            continue
        if key in uids and state not in (b"Z", b"X"):
            found.append(int(name))
    return found


def kill_uid(uid: int, budget_s: float = 5.0) -> bool:
    """SIGKILL every process of `uid` (through pidfds: no pid-reuse race) until none is left."""
    end = time.monotonic() + budget_s
    while True:
        pids = pids_of_uid(uid)
        if not pids:
            return True
        if time.monotonic() > end:
            return False
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                if str(uid).encode() in _status_of(pid)[1]:  # still the process we found
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.close(fd)
        time.sleep(0.002)


def _wait(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Whether `proc` exited within `timeout_s`. Through a pidfd: Popen.wait(timeout) polls with sleeps of
    up to 50 ms, which noticed most runs' exits tens of ms late."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout_s * 1000))))
    finally:
        os.close(fd)


def _drain(fd: int, limit: int = 1 << 16) -> bytes:
    """What is in the pipe now (non-blocking: an escaped process may still hold its write end)."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    try:
        while sum(map(len, chunks)) < limit:
            chunk = os.read(fd, limit)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def _tail(f, n: int) -> str:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - 4 * n))
    return f.read().decode("utf-8", errors="replace")[-n:]


def _refusal(reason: str) -> SandboxRefused:
    return SandboxRefused(
        f"unmask sandbox: refusing to run untrusted code as root: {reason}. Run the evaluator as an "
        f"unprivileged user, or accept running it as root with run_python(..., allow_root=True) or "
        f"{_ALLOW_ROOT_ENV}=1.")


def run_python(code: str, timeout_s: float = 5.0, memory_mb: int = 512, *,
               allow_root: bool | None = None) -> SandboxResult:
    """Execute `code` in the sandbox (see the module docstring for the layers and the verdict).

    Raises SandboxRefused when the evaluator is root and the run could not switch to an
    unprivileged uid, unless `allow_root` (default: env UNMASK_SANDBOX_ALLOW_ROOT=1).
    """
    if allow_root is None:
        allow_root = os.environ.get(_ALLOW_ROOT_ENV, "") == "1"
    skip = _SKIP
    uid = -1
    if os.geteuid() == 0:
        picked = _pick_ids()
        if picked is None and not allow_root:
            raise _refusal("no unprivileged uid/gid is mapped in this user namespace")
        uid = -1 if picked is None else picked
    flags = ",".join(sorted(skip | ({"allow-root"} if allow_root else set())))
    survivors = False
    try:
        with tempfile.TemporaryDirectory(prefix="unmask-sandbox-", ignore_cleanup_errors=True) as box, \
                tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            with open(os.path.join(box, "main.py"), "w", encoding="utf-8") as f:
                f.write(code)
            if uid >= 0:
                os.chown(box, uid, uid)
            nonce = secrets.token_hex(32).encode()
            nonce_r, nonce_w = os.pipe()
            info_r, info_w = os.pipe()
            verdict_r, verdict_w = os.pipe()
            os.write(nonce_w, nonce)
            os.close(nonce_w)
            env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": box, "TMPDIR": box, "LANG": "C.UTF-8",
                   "OMP_NUM_THREADS": "1", **_NUMPY_ENV}
            args = [nonce_r, info_w, verdict_w, memory_mb << 20, int(timeout_s) + 1, _OUTPUT_LIMIT, _NOFILE, _NPROC,
                    uid, uid, _DISK_MB, box, flags]
            try:
                try:
                    proc = subprocess.Popen(
                        [sys.executable, "-I", "-c", _BOOTSTRAP, *map(str, args)], cwd=box, env=env,
                        stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                        pass_fds=(nonce_r, info_w, verdict_w))
                finally:
                    for fd in (nonce_r, info_w, verdict_w):
                        os.close(fd)
                try:
                    timed_out = not _wait(proc, timeout_s)
                finally:
                    try:  # the whole process group: also children the code may have spawned
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    if uid >= 0 and "uid-sweep" not in skip:  # also those that left the group (setsid)
                        survivors = not kill_uid(uid)
                    elif uid >= 0:
                        survivors = True
                    proc.wait()
                info = _drain(info_r).decode("utf-8", errors="replace")
                verdict = _drain(verdict_r)
            finally:
                for fd in (info_r, verdict_r):
                    os.close(fd)
            stdout, stderr = _tail(out, _TAIL), _tail(err, _TAIL)
    finally:
        if uid >= 0 and not survivors:
            with _IDS_LOCK:
                _IDS_IN_USE.discard(uid)
    if info.startswith("refused:"):
        raise _refusal(info.removeprefix("refused:"))
    layers = tuple(info.split("\n")) if info else ()
    if layers:
        layers += ("pgroup-kill",) + (("uid-sweep",) if uid >= 0 and "uid-sweep" not in skip else ())
    rc = proc.returncode
    if timed_out or rc in (-signal.SIGXCPU, -signal.SIGKILL):
        return SandboxResult(False, "timeout", stderr, stdout, layers)
    if rc == 0 and verdict == nonce:
        return SandboxResult(True, "passed", stderr, stdout, layers)
    last = stderr.strip().split("\n")[-1] if stderr.strip() else ""
    if rc < 0 or any(m in last for m in _ERROR_MARKERS):
        return SandboxResult(False, "error", stderr, stdout, layers)
    return SandboxResult(False, "failed", stderr, stdout, layers)
