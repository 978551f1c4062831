"""Starting and stopping like a service: `make run`, `make serve` and `manage.py runqcluster`.

Each command runs in a session of its own (``start_new_session``), is signalled the way a
terminal (SIGINT to the foreground group) or docker/systemd/a supervisor (SIGTERM to the group)
does it, and must leave no process of that session behind within 10 s, nor print a crash.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ROOT, free_port, migrate, runtime_env

pytestmark = pytest.mark.e2e

STOP_LIMIT = 10.0  # seconds, from the signal to the last process of the session gone
START_TIMEOUT = 60.0  # make: migrate, schedules, banner, supervisord, daphne; a loaded 2-core box
CRASHES = ("Segmentation fault", "Traceback", "Error", "make: ***")
SECRETS = {
    "DJANGO_SECRET_KEY": "shutdown-test-secret-key-not-the-default-0123456789",
    "INTERNAL_API_KEY": "shutdown-test-internal-key-0123456789",
}


def session_processes(sid: int) -> list[str]:
    """Live processes (zombies are dead) whose session is ``sid``: pid and command line."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue  # gone while we looked
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            found.append(f"{stat.parent.name} {cmdline.strip()}")
    return found


class Launched:
    """A command started as the leader of a new session, its output in a file."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        fd, name = tempfile.mkstemp(prefix="shutdown-", suffix=".log")
        self.log = Path(name)
        with os.fdopen(fd, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: Callable[[], bool], timeout: float, describe: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"exited ({self.proc.returncode}) before {describe}:\n{self.output}")
            time.sleep(0.2)
        pytest.fail(f"no {describe} within {timeout:.0f} s:\n{self.output}")

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        self.wait_for(lambda: text in self.output, timeout, repr(text))

    def send(self, sig: signal.Signals) -> None:
        """Signal the whole group, as a terminal or a service manager does."""
        os.killpg(self.proc.pid, sig)
        self.signalled = (sig, time.monotonic())

    def wait_gone(self) -> float:
        """The seconds from the signal until no process of the session is left."""
        sig, started = self.signalled
        while session_processes(self.proc.pid) and time.monotonic() - started < STOP_LIMIT:
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        left = session_processes(self.proc.pid)
        assert not left, f"still running {elapsed:.1f} s after {sig.name}: {left}\n{self.output}"
        self.proc.wait(1)
        return elapsed

    def stop(self, sig: signal.Signals) -> float:
        self.send(sig)
        return self.wait_gone()

    def close(self) -> None:
        for line in session_processes(self.proc.pid):
            os.kill(int(line.split()[0]), signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.log.unlink(missing_ok=True)


@pytest.fixture
def launch() -> Iterator[Callable[[list[str], dict[str, str]], Launched]]:
    launched: list[Launched] = []

    def start(argv: list[str], env: dict[str, str]) -> Launched:
        launched.append(Launched(argv, env))
        return launched[-1]

    yield start
    for one in launched:
        one.close()


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """For the tests that need no migrate of their own (runqcluster, the refusal)."""
    return f"sqlite:///{tmp_path_factory.mktemp('shutdown') / 'db.sqlite3'}"


def make_env(database_url: str, **extra: str) -> dict[str, str]:
    env = runtime_env(database_url=database_url, extra={**SECRETS, "LOG_LEVEL": "INFO", **extra})
    # What the test's own make (if any) left in the environment would make a sub-make of ours.
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DEBUG"):
        env.pop(name, None)
    return env


def assert_no_crash(output: str) -> None:
    for crash in CRASHES:
        assert crash not in output, f"{crash!r} in the output:\n{output}"


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False).is_success
    except httpx.HTTPError:
        return False


def daphnes(launched: Launched) -> list[str]:
    return [p for p in session_processes(launched.proc.pid) if "daphne" in p]


# --- make run, make serve ----------------------------------------------------------------------


def test_it_stops_every_process_of_make_run_and_make_serve(launch, tmp_path):
    # Rounds alternate the signals, so two give each command each signal once; both commands
    # run at once to keep the suite fast. SHUTDOWN_ROUNDS=20 makes it a soak test.
    alternate = [
        {"run": signal.SIGINT, "serve": signal.SIGTERM},
        {"run": signal.SIGTERM, "serve": signal.SIGINT},
    ]
    rounds = [alternate[i % 2] for i in range(int(os.environ.get("SHUTDOWN_ROUNDS", "2")))]
    workers = {"run": 1, "serve": 2}
    for signals in rounds:
        servers = {}
        for target in signals:
            port = free_port()
            # A database each: two `migrate`s at once on one new SQLite file would collide.
            env = make_env(f"sqlite:///{tmp_path / target}.sqlite3", PORT=str(port), WORKERS="2")
            servers[target] = (port, launch(["make", "--no-print-directory", target], env))
        for target, (port, server) in servers.items():
            server.wait_for(lambda port=port: healthy(port), START_TIMEOUT, "GET /health 200")
            assert len(daphnes(server)) == workers[target], session_processes(server.proc.pid)
            server.wait_for_output("] running.")  # the cluster is up too, not still importing
        for target, (_, server) in servers.items():
            server.send(signals[target])
        for target, (_, server) in servers.items():
            elapsed = server.wait_gone()
            assert "stopped: qcluster (exit status 0)" in server.output, server.output
            assert_no_crash(server.output)
            print(f"make {target}: {signals[target].name}, everything gone in {elapsed:.2f} s")


def test_it_refuses_to_serve_on_development_secrets(launch, database_url):
    env = make_env(database_url, PORT=str(free_port()))
    del env["DJANGO_SECRET_KEY"], env["INTERNAL_API_KEY"]
    server = launch(["make", "--no-print-directory", "serve"], env)
    assert server.proc.wait(30) != 0
    assert "refusing to start" in server.output
    assert "DJANGO_SECRET_KEY" in server.output and "INTERNAL_API_KEY" in server.output
    assert "supervisord" not in server.output
    assert not session_processes(server.proc.pid)


# --- manage.py runqcluster ---------------------------------------------------------------------


def runqcluster(launch, env: dict[str, str]) -> Launched:
    launched: Launched
    migrate(env)
    launched = launch([sys.executable, "manage.py", "runqcluster"], env)
    return launched


def test_it_stops_a_running_cluster_when_its_whole_group_gets_sigint(launch, database_url):
    # The ORM broker; SIGINT reaches the sentinel and its workers too (they ignore it).
    cluster = runqcluster(launch, make_env(database_url))
    cluster.wait_for_output("] running.")
    cluster.stop(signal.SIGINT)
    assert "has stopped (SIGINT)" in cluster.output
    assert_no_crash(cluster.output)


def test_it_waits_for_an_unreachable_broker_and_still_stops(launch, database_url):
    closed = free_port()  # nothing listens there
    cluster = runqcluster(launch, make_env(database_url, REDIS_URL=f"redis://127.0.0.1:{closed}/0"))
    cluster.wait_for_output("waiting for the task broker (Redis)")
    cluster.wait_for_output("retrying in 1.0 s")  # a second try, with backoff
    assert cluster.proc.poll() is None
    cluster.stop(signal.SIGTERM)
    assert "stopped (SIGTERM) while waiting for the task broker" in cluster.output
    assert "Q Cluster" not in cluster.output
    assert "Traceback" not in cluster.output


def test_it_starts_the_cluster_once_the_broker_comes_back(launch, database_url, tmp_path):
    port = free_port()
    cluster = runqcluster(launch, make_env(database_url, REDIS_URL=f"redis://127.0.0.1:{port}/0"))
    cluster.wait_for_output("waiting for the task broker (Redis)")
    redis = launch(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        + ["no", "--dir", str(tmp_path)],
        os.environ.copy(),
    )
    cluster.wait_for_output("is reachable; starting the cluster")
    cluster.wait_for_output("] running.")
    # The whole group at once, sentinel and workers included: what used to hang qcluster.
    cluster.stop(signal.SIGTERM)
    assert "has stopped (SIGTERM)" in cluster.output
    assert "Traceback" not in cluster.output
    redis.stop(signal.SIGTERM)
