import time

from unmask.tasks.sandbox import run_python


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
    code = "import subprocess, time\nsubprocess.Popen(['sleep', '30'])\ntime.sleep(30)"
    t = time.monotonic()
    r = run_python(code, timeout_s=1.0)
    assert r.status == "timeout" and time.monotonic() - t < 5


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
                   "assert sys.stdin.read() == ''")
    assert r.passed, r.stderr


def test_parallel_calls_from_threads():
    from concurrent.futures import ThreadPoolExecutor

    programs = [f"assert {i} * 2 == {2 * i}" if i % 2 else f"assert {i} == -1" for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run_python, programs))
    assert [r.passed for r in results] == [bool(i % 2) for i in range(8)]
