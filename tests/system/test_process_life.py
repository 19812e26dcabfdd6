"""The process's life under `python -m app`: SIGTERM at any moment, dead workers and
supervisors, the temporary directory, and the CPU budget of a cgroup with a quota.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx2
import numpy as np
import pytest
from safetensors.numpy import save

from app.ops.metrics import UpdateMetrics
from scripts.live_server import LiveServer, free_port, live_server
from tests.helpers.metrics_text import sample
from tests.helpers.raw_http import connect

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


# SIGTERM, whenever it comes.


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("delay", [0.1, 0.2, 0.6, 1.5])
def test_sigterm_at_any_moment_of_the_start_exits_0(workers: int, delay: float) -> None:
    # 0.1 s: while Python imports the service (the handler is in place after about 30 ms,
    # the interpreter's own start); later, while uvicorn starts, the workers start, the
    # app's lifespan runs.
    env = {
        **os.environ,
        "PORT": str(free_port()),
        "WEB_CONCURRENCY": str(workers),
        "RLHF_SHUTDOWN_DRAIN_SECONDS": "0.2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "--no-access-log"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(delay)
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"still running 30 s after SIGTERM: {stderr.decode()[-2000:]}")
    assert process.returncode == 0, stderr.decode()[-2000:]


# Between the settings and the server's own handling of the signal (uvicorn sets itself
# up, the metrics directory of the workers is made), inside code that keeps going whatever
# a callback raises, as a finalizer does ("Exception ignored in ...").
_SIGTERM_WHILE_UVICORN_SETS_UP = """
import os, signal, sys, time
import uvicorn

def run(*args, **kwargs):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    except BaseException as exc:
        print(f"the library caught {exc!r}", file=sys.stderr, flush=True)
    raise AssertionError("the SIGTERM was not handled")

uvicorn.run = run
from app.__main__ import main
main(["--no-access-log"])
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_while_uvicorn_sets_up_exits_0_and_leaves_no_metrics_dir(
    workers: int, tmp_path: Path
) -> None:
    env = {**os.environ, "PORT": str(free_port()), "WEB_CONCURRENCY": str(workers)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["TMPDIR"] = str(tmp_path)  # where the workers' metrics directory is made
    result = subprocess.run(
        [sys.executable, "-c", _SIGTERM_WHILE_UVICORN_SETS_UP],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"caught" not in result.stderr
    assert list(tmp_path.iterdir()) == []


# Reading the settings, as a library would that turns any exception raised in a callback
# into an error of its own (pydantic-core, building the settings' validators, answers a
# SchemaError, and the process exits 1): the SIGTERM comes in the middle of it.
_SIGTERM_WHILE_SETTINGS_ARE_READ = """
import os, signal, sys, time
import app.settings

def load_settings():
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    except BaseException as exc:
        raise RuntimeError(f"the library caught {exc!r}") from None
    raise AssertionError("the SIGTERM was not handled")

app.settings.load_settings = load_settings
from app.__main__ import main
main(["--no-access-log"])
"""


def test_sigterm_while_the_settings_are_read_exits_0_whatever_catches_exceptions() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SIGTERM_WHILE_SETTINGS_ARE_READ],
        cwd=ROOT,
        env={**os.environ, "PORT": str(free_port())},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"caught" not in result.stderr


def test_sigterm_cuts_a_trickling_upload_when_the_shutdown_timeout_ends() -> None:
    env = {"RLHF_SHUTDOWN_DRAIN_SECONDS": "0.3", "RLHF_SHUTDOWN_TIMEOUT_SECONDS": "1"}
    with live_server(env) as running, connect(running.base_url) as sock:
        sock.sendall(
            b"POST /update HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n["
        )
        time.sleep(0.3)
        signalled = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        while time.monotonic() - signalled < 15 and running.process.poll() is None:
            with contextlib.suppress(OSError):  # once cut, the connection refuses more
                sock.sendall(b"1,")  # a byte or two a tenth of a second: never done
            time.sleep(0.1)
        status = running.process.wait(timeout=5)
        exited = time.monotonic() - signalled
        lines = running.log_lines()
    assert status == 0
    # The drain (0.3 s), then at most the shutdown timeout (1 s) for the upload, not 15 s.
    assert exited < 3, f"exited {exited:.1f} s after SIGTERM"
    # The upload was cut, and ended as a client's disconnect: not cancelled (a 500 and a
    # traceback at ERROR), nor waited for.
    assert not [line for line in lines if line["level"] in {"ERROR", "CRITICAL"}]
    [update] = [line for line in lines if line["logger"] == "app.update"]
    assert update["error"] == "client-disconnected"


# Workers and their supervisor.


def _worker_pids(server: LiveServer, count: int, timeout: float = 30) -> list[int]:
    """The pids of the last `count` worker processes that uvicorn has logged as started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [
            int(match.group(1))
            for line in server.log_lines()
            if (match := re.fullmatch(r"Started server process \[(\d+)\]", line["message"]))
        ]
        if len(pids) >= count:
            return pids[-count:]
        time.sleep(0.1)
    msg = f"fewer than {count} workers started"
    raise AssertionError(msg)


def _gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie no one reaped counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


def test_workers_exit_when_their_supervisor_is_killed() -> None:
    env = {"WEB_CONCURRENCY": "2", "RLHF_SHUTDOWN_DRAIN_SECONDS": "0.3"}
    with live_server(env) as running:
        workers = _worker_pids(running, 2)
        assert not any(_gone(pid) for pid in workers)
        running.process.kill()  # SIGKILL: the supervisor cannot pass anything on
        running.process.wait()
        deadline = time.monotonic() + 10
        while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(pid) for pid in workers), "a worker outlived its supervisor"
        with pytest.raises(httpx2.TransportError):
            httpx2.get(f"{running.base_url}/healthz", timeout=2)
        lines = running.log_lines()
    assert sum("supervisor process" in line["message"] for line in lines) == 2


def test_a_multi_worker_run_leaves_nothing_in_the_temp_directory(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"WEB_CONCURRENCY": "2", "RLHF_SHUTDOWN_DRAIN_SECONDS": "0", "TMPDIR": str(temp)}
    with live_server(env) as running:
        assert [path.name[:13] for path in temp.iterdir()] == ["rlhf-metrics-"]
        assert httpx2.get(f"{running.base_url}/metrics").status_code == 200
        os.kill(_worker_pids(running, 2)[0], signal.SIGKILL)  # one dies and is replaced
        _worker_pids(running, 3)
        assert running.stop(timeout=30) == 0
    assert list(temp.iterdir()) == []


def test_the_in_flight_gauge_forgets_workers_that_were_killed() -> None:
    env = {
        "WEB_CONCURRENCY": "2",
        "RLHF_SHUTDOWN_DRAIN_SECONDS": "0",
        "RLHF_MAX_IN_FLIGHT": "16",
    }
    with live_server(env) as running:
        workers = _worker_pids(running, 2)
        with _updates_computing(running, clients=6):
            deadline = time.monotonic() + 30
            while _in_flight(running) < 1:  # wait until a scrape sees updates computing
                assert time.monotonic() < deadline, "no update was ever seen in flight"
            for pid in workers:  # the workers die with updates in flight
                os.kill(pid, signal.SIGKILL)
            replacements = _worker_pids(running, 4)[2:]
            assert not set(replacements) & set(workers)
        # Whichever worker answers the scrape, the dead ones count for nothing.
        scrapes = [_in_flight(running) for _ in range(6)]
    assert scrapes == [0] * 6


def test_a_scrape_drops_the_live_gauges_of_a_killed_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two processes in multiprocess mode, as two workers: each sets the gauge and counts
    # requests; then one is killed.
    code = (
        "import sys, time\n"
        "from app.ops.metrics import UpdateMetrics\n"
        "m = UpdateMetrics()\n"
        "m.in_flight.set(int(sys.argv[1]))\n"
        "m.requests.labels('200', 'json').inc(int(sys.argv[2]))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics = UpdateMetrics()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, in_flight, served],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
        )
        for in_flight, served in [("3", "5"), ("1", "2")]
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
        before = metrics.exposition(None)[0].decode()
        children[0].kill()
        children[0].wait()
        after = metrics.exposition(None)[0].decode()
    finally:
        for child in children:
            child.kill()
            child.wait()
            assert child.stdout is not None
            child.stdout.close()
    assert sample(before, "rlhf_update_in_flight") == 4
    assert sample(after, "rlhf_update_in_flight") == 1
    # The counters of a dead process still count: what it served was served.
    assert sample(after, "rlhf_update_requests_total", status="200", format="json") == 7


def _in_flight(server: LiveServer) -> float:
    return sample(httpx2.get(f"{server.base_url}/metrics").text, "rlhf_update_in_flight")


@contextmanager
def _updates_computing(server: LiveServer, clients: int) -> Iterator[None]:
    """`clients` threads sending large updates back to back, so that some are computing."""
    rng = np.random.default_rng(0)
    b, n = 64, 16384
    body = save(
        {
            "weights": rng.standard_normal(n),
            "rewards": rng.standard_normal(b),
            "policy_log_probs": rng.standard_normal(b),
            "ref_log_probs": rng.standard_normal(b),
            "log_prob_grads": rng.standard_normal((b, n)),
            "beta": np.array(0.1),
            "lr": np.array(0.01),
        }
    )
    headers = {"content-type": "application/x-safetensors"}
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            with contextlib.suppress(httpx2.HTTPError):
                httpx2.post(f"{server.base_url}/update", content=body, headers=headers, timeout=10)

    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(send)
        try:
            yield
        finally:
            stop.set()


# Sizes with units, and the CPU budget.


def test_a_size_with_a_unit_sets_the_body_limit() -> None:
    with live_server({"RLHF_MAX_BODY_SIZE": "2KiB", "RLHF_SHUTDOWN_DRAIN_SECONDS": "0"}) as running:
        headers = {"content-type": "application/json"}
        small = httpx2.post(f"{running.base_url}/update", content=b" " * 2048, headers=headers)
        large = httpx2.post(f"{running.base_url}/update", content=b" " * 2049, headers=headers)
    assert small.status_code == 400  # read whole: blank is not JSON
    assert large.status_code == 413
    assert "limit of 2048 bytes" in large.json()["detail"]


@contextmanager
def _cgroup_with_one_cpu() -> Iterator[Path]:
    """A fresh cgroup allowed one CPU's worth of time, where the machine lets this process
    make one (root, and a writable cgroup v2 tree with the cpu controller, or v1's cpu)."""
    name = f"rlhf-test-{uuid.uuid4().hex[:8]}"
    candidates = [
        (Path("/sys/fs/cgroup"), {"cpu.max": "100000 100000"}),
        (Path("/sys/fs/cgroup/cpu"), {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"}),
    ]
    for parent, limits in candidates:
        # A cgroup file system makes each new directory's files itself; anything else
        # (the tmpfs that holds the v1 mounts, say) is not one.
        if not (parent / "cgroup.procs").is_file():
            continue
        directory = parent / name
        try:
            directory.mkdir()
        except OSError:
            continue
        try:
            made = all((directory / file).is_file() for file in [*limits, "cgroup.procs"])
            for file, value in limits.items() if made else ():
                with (directory / file).open("r+") as handle:
                    handle.write(value)
        except OSError:
            made = False
        try:
            if made:
                yield directory
                return
        finally:
            directory.rmdir()
    pytest.skip("no cgroup with a CPU quota can be made here")


def test_the_default_in_flight_count_honours_the_cgroup_cpu_quota() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: a quota of one CPU changes nothing")
    script = "from app.settings import load_settings; print(load_settings().max_in_flight)"
    with _cgroup_with_one_cpu() as cgroup:
        # The shell joins the cgroup, then becomes Python: the settings are read inside it.
        join_then_run = f'echo $$ > {cgroup}/cgroup.procs && exec "$0" -c "$1"'
        done = subprocess.run(
            ["sh", "-c", join_then_run, sys.executable, script],
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if k != "RLHF_MAX_IN_FLIGHT"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def test_updates_keep_being_served_by_the_replacement_of_a_killed_worker() -> None:
    env = {"WEB_CONCURRENCY": "2", "RLHF_SHUTDOWN_DRAIN_SECONDS": "0"}
    with live_server(env) as running:
        os.kill(_worker_pids(running, 2)[0], signal.SIGKILL)
        _worker_pids(running, 3)
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = set(
                pool.map(lambda _: httpx2.get(f"{running.base_url}/healthz").status_code, range(40))
            )
        assert statuses == {200}
        assert running.stop(timeout=30) == 0
