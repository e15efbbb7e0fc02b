"""The shared low layer: optional imports (``autoinfer._lazy``), child processes
(``autoinfer._proc``), the thread count (``autoinfer._hw``), canonical JSON, locks
(``autoinfer._util``) and objectives."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from autoinfer import _hw, _lazy, _proc
from autoinfer._util import KeyedLocks, exclusive, file_lock, stable_json
from autoinfer.backends import base
from autoinfer.errors import BackendUnavailable
from autoinfer.objectives import OBJECTIVES


# -- optional imports ------------------------------------------------------------------------
def test_a_missing_module_is_backend_unavailable_with_the_extra_to_install() -> None:
    with pytest.raises(BackendUnavailable) as info:
        _lazy.import_optional("autoinfer_no_such_module", package="no-such", extra="nosuch")
    assert "no-such cannot be imported" in str(info.value)
    assert info.value.fix == "pip install 'autoinfer[nosuch]'"
    with pytest.raises(BackendUnavailable) as info:
        _lazy.import_optional("autoinfer_no_such_module", missing="it is not installed")
    assert str(info.value).startswith("it is not installed (")
    assert info.value.fix == "pip install autoinfer_no_such_module"


def test_a_module_that_fails_on_import_asks_for_a_reinstall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "autoinfer_broken_mod.py").write_text("raise OSError('libfoo.so: not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BackendUnavailable, match=r"fails on import \(OSError: libfoo") as info:
        _lazy.import_optional("autoinfer_broken_mod", extra="broken")
    assert info.value.fix == "reinstall it: pip install 'autoinfer[broken]'"


def test_the_guard_runs_once_around_the_first_import_and_from_one_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "autoinfer_lazy_probe.py").write_text(
        "import os\nSEEN = os.environ.get('AUTOINFER_LAZY_PROBE')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    calls: list[str] = []

    import contextlib

    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        calls.append("before")
        os.environ["AUTOINFER_LAZY_PROBE"] = "set"
        time.sleep(0.05)  # let the other threads pile up on the lock
        yield
        calls.append("after:" + sys.modules["autoinfer_lazy_probe"].SEEN)

    monkeypatch.delenv("AUTOINFER_LAZY_PROBE", raising=False)
    got: list[object] = []
    threads = [
        threading.Thread(
            target=lambda: got.append(_lazy.import_optional("autoinfer_lazy_probe", guard=guard))
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["before", "after:set"]
    assert len(got) == 4 and all(m is sys.modules["autoinfer_lazy_probe"] for m in got)
    # a module replaced in sys.modules since (a test's fake) is imported again, guard and all
    fake = SimpleNamespace(SEEN="fake")
    monkeypatch.setitem(sys.modules, "autoinfer_lazy_probe", fake)
    assert _lazy.import_optional("autoinfer_lazy_probe", guard=guard) is fake
    assert calls == ["before", "after:set", "before", "after:fake"]


def test_present_does_not_import() -> None:
    assert _lazy.present("json") and not _lazy.present("autoinfer_no_such_module")
    assert not _lazy.present("autoinfer_no_such_pkg.sub")


# -- bounded child processes -----------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_output_status_and_environment(tmp_path: Path) -> None:
    res = _proc.run_bounded(
        [
            sys.executable,
            "-c",
            "import os, sys; print(os.environ['AUTOINFER_PROC_X']); "
            "print('err', file=sys.stderr); sys.exit(3)",
        ],
        timeout_s=60,
        env={**os.environ, "AUTOINFER_PROC_X": "seen"},
    )
    assert res.returncode == 3 and not res.ok and not res.timed_out
    assert res.output.split() == ["seen", "err"] and res.describe() == "exited with status 3"
    log = tmp_path / "child.log"
    res = _proc.run_bounded(
        [sys.executable, "-c", "import os; print(os.getcwd())"], timeout_s=60, cwd=tmp_path, log_path=log
    )
    assert res.ok and log.read_text().strip() == str(tmp_path) == res.output.strip()


def test_the_default_environment_carries_every_runtimes_opt_outs() -> None:
    from autoinfer.backends import child_environment

    wanted = {k: v for k, v in child_environment({}).items()}
    assert wanted, "no backend declares a child environment"
    res = _proc.run_bounded(
        [sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"], timeout_s=60
    )
    import json

    env = json.loads(res.output)
    assert {k: env.get(k) for k in wanted} == wanted


def test_a_time_out_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "print('started', flush=True)\ntime.sleep(120)\n"
    )
    t0 = time.monotonic()
    res = _proc.run_bounded([sys.executable, "-c", code], timeout_s=3)
    assert res.timed_out and not res.ok and res.returncode == -signal.SIGKILL
    assert time.monotonic() - t0 < 30 and "started" in res.output
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the grandchild outlived the time-out"


def test_an_interrupted_wait_kills_the_child(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    started: list[int] = []
    real_popen = _proc.subprocess.Popen

    class Interrupted(real_popen):  # type: ignore[misc, valid-type]
        def wait(self, timeout: float | None = None) -> int:
            if not started:
                started.append(self.pid)
                raise KeyboardInterrupt
            return super().wait(timeout)

    monkeypatch.setattr(_proc.subprocess, "Popen", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        _proc.run_bounded([sys.executable, "-c", "import time; time.sleep(120)"], timeout_s=60)
    assert started and not _alive(started[0])


def test_a_memory_limit_stops_a_greedy_child() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the memory limit is RLIMIT_AS, Linux only")
    code = "import time; time.sleep(0.5); b = bytearray(2 << 30); print('allocated')"
    res = _proc.run_bounded([sys.executable, "-c", code], timeout_s=60, memory_limit_bytes=1 << 30)
    assert not res.ok and "MemoryError" in res.output and "allocated" not in res.output


def test_a_command_that_cannot_start_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        _proc.run_bounded([str(tmp_path / "missing")], timeout_s=5)


# -- thread count, canonical JSON, objectives ------------------------------------------------
@pytest.mark.parametrize(
    "hw,default,want",
    [
        (SimpleNamespace(cpu=SimpleNamespace(usable_cores=6)), 1, 6),
        (SimpleNamespace(cpu=SimpleNamespace(usable_cores=0)), 1, 1),
        (SimpleNamespace(cpu=SimpleNamespace(usable_cores=None)), 4, 4),
        (SimpleNamespace(cpu=SimpleNamespace(usable_cores=True)), 3, 3),
        (SimpleNamespace(), 2, 2),
        (None, 0, 1),
    ],
)
def test_threads_for(hw: object, default: int, want: int) -> None:
    assert _hw.threads_for(hw, default) == want


def test_old_names_still_resolve_to_the_one_home() -> None:
    from autoinfer.backends import _common

    assert base.stable_json is stable_json and base.OBJECTIVES is OBJECTIVES
    assert _common.usable_cores is _hw.threads_for
    assert stable_json({"b": 1, "a": [1.5, None]}) == '{"a":[1.5,null],"b":1}'
    assert OBJECTIVES[0] == "latency" and len(set(OBJECTIVES)) == len(OBJECTIVES) == 4


# -- locks ----------------------------------------------------------------------------------
def test_exclusive_lets_one_thread_in_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    inside, most, entered = [0], [0], []
    count = threading.Lock()

    def work() -> None:
        for _ in range(5):
            with exclusive(path) as held:
                entered.append(held)
                with count:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.002)
                with count:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert entered == [True] * 30
    assert most[0] == 1


def test_exclusive_times_out_when_another_thread_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    got = threading.Event()
    done = threading.Event()

    def holder() -> None:
        with exclusive(path):
            got.set()
            done.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert got.wait(10)
    t0 = time.monotonic()
    with exclusive(path, timeout_s=0.2) as held:
        assert held is False
    assert 0.15 <= time.monotonic() - t0 < 5
    done.set()
    t.join(10)
    with exclusive(path, timeout_s=0) as held:
        assert held is True


_HOLD = """
import sys, time
from autoinfer._util import file_lock
with file_lock(sys.argv[1]) as held:
    print("held" if held else "not held", flush=True)
    sys.stdin.readline()
"""


def test_file_lock_excludes_another_process_until_it_lets_go(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "x.lock"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with file_lock(path, timeout_s=0.3) as held:
            assert held is False
        assert time.monotonic() - t0 >= 0.25
        with exclusive(path, timeout_s=0.1) as held:  # the thread lock is free, the file is not
            assert held is False
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(30) == 0
        with file_lock(path, timeout_s=5) as held:
            assert held is True
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_file_lock_that_cannot_be_taken_yields_false_and_says_why(tmp_path: Path) -> None:
    errors: list[OSError] = []
    ran = False
    with file_lock(tmp_path / "no-such-dir" / "x.lock", 1.0, on_error=errors.append) as held:
        ran = True
        assert held is False
    assert ran and len(errors) == 1 and isinstance(errors[0], FileNotFoundError)
    with exclusive(tmp_path / "no-such-dir" / "x.lock", on_error=errors.append) as held:
        assert held is False  # threads are still excluded; the file lock is impossible
    assert len(errors) == 2


def test_keyed_locks_are_one_per_key() -> None:
    locks = KeyedLocks()
    assert locks.lock("a") is locks.lock("a")
    assert locks.lock("a") is not locks.lock("b")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads: that is the point
def test_a_forked_child_gets_fresh_locks_not_the_parents_held_ones(tmp_path: Path) -> None:
    locks = KeyedLocks()
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with locks.lock("k"), exclusive(tmp_path / "x.lock"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # the child: the holding thread does not exist here
            code = 1
            try:
                fresh = locks.lock("k").acquire(timeout=2)
                # the parent's thread still holds the file lock: only the thread lock is fresh
                with exclusive(tmp_path / "x.lock", timeout_s=0.2) as file_held:
                    code = 0 if fresh and not file_held else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        t.join(10)
    assert locks.lock("k").acquire(timeout=2)  # the parent's own lock, released by its holder


# -- what backends declare is read --------------------------------------------------------
def test_the_doctor_shows_each_runtimes_pip_extra_and_what_it_can_drive(tmp_path: Path) -> None:
    from autoinfer import backends, doctor

    rep = doctor.report(cache_dir=tmp_path)
    by_name = {r["backend"]: r for r in rep["runtimes"]}
    for name in backends.names():
        b = backends.get(name)
        r = by_name[name]
        assert r["pip_extra"] == b.pip_extra
        assert r["install"] == (
            f"pip install 'autoinfer[{b.pip_extra}]'" if b.pip_extra else f"pip install {b.package}"
        )
        assert r["supports"] == {
            "devices": list(b.capabilities.devices),
            "precisions": list(b.capabilities.precisions),
        }
        assert "fp32" in r["supports"]["precisions"]
        # a device in use here is one the backend declares it can drive
        assert {d.split(":")[0] for d in r["devices"]} <= set(b.capabilities.devices), r


# -- in a forked child -------------------------------------------------------------------------
def _boom() -> None:
    os.abort()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="in_child forks on Linux only")
def test_in_child_answers_reports_errors_survives_crashes_and_times_out() -> None:
    assert _proc.in_child(lambda: {"n": 3}, 60) == ("ok", {"n": 3})
    kind, msg = _proc.in_child(lambda: 1 // 0, 60)
    assert kind == "error" and msg.startswith("ZeroDivisionError")
    kind, how = _proc.in_child(_boom, 60)
    assert kind == "crashed" and "SIGABRT" in how
    t0 = time.monotonic()
    assert _proc.in_child(lambda: time.sleep(60), 1) == ("timeout", None)
    assert time.monotonic() - t0 < 30


# -- the measuring workers ---------------------------------------------------------------------
def test_a_measuring_worker_leads_its_own_group_and_dies_with_this_process(tmp_path: Path) -> None:
    from autoinfer import workers

    w = workers.Worker(tmp_path, memory_limit_mb=0.0)
    proc = w._start()
    try:
        assert os.getsid(proc.pid) == proc.pid, "the worker does not lead its own session"
        assert w in set(workers._LIVE)
        workers.kill_all_workers()  # what the exit handler does
        assert w.proc is None and proc.returncode is not None and not _alive(proc.pid)
    finally:
        w.kill()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_forgets_the_parents_workers(tmp_path: Path) -> None:
    from autoinfer import workers

    w = workers.Worker(tmp_path, memory_limit_mb=0.0)
    proc = w._start()
    try:
        pid = os.fork()
        if pid == 0:  # the child: it must not know (nor kill at exit) the parent's worker
            os._exit(0 if not list(workers._LIVE) else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert proc.poll() is None, "the parent's worker died with the forked child"
    finally:
        w.kill()
