"""Real daphne processes for the end-to-end tests.

``Runtime`` starts ``daphne agent_runtime.asgi:application`` on a free port with a production-like
environment (DEBUG off, non-default secrets), waits until ``GET /health`` answers and keeps the
process's output in a log file for diagnostics. The database is migrated once before the first
start (``manage.py migrate`` with the same environment).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
# DEBUG is off here: the server refuses a key shorter than 32 characters.
API_KEY = "e2e-internal-api-key-0123456789abcdef"
SECRET_KEY = "e2e-secret-key-not-the-default-and-long-enough-0123456789"  # noqa: S105
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0

# Variables a developer's shell (or CI) may hold that would change what the runtime talks to.
_SCRUB = (
    "REDIS_URL",
    "LLM_BASE_URL",
    "LLM_API_KEY",
    "CHANNEL_PREFIX",
    "CACHE_PREFIX",
    "ALLOWED_HOSTS",
    "MULTI_AGENT_MODE",
    "APPROVAL_REQUIRED_TOOLS",
    "TOOL_POLICY",
)

_migrated: set[str] = set()
_migrate_lock = threading.Lock()


class StartError(Exception):
    """The server (or its migration) did not start; the output tail is in the message."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _daphne() -> list[str]:
    sibling = Path(sys.executable).with_name("daphne")
    if sibling.exists():
        return [str(sibling)]
    return [sys.executable, "-m", "daphne"]


def runtime_env(
    *,
    database_url: str,
    redis_url: str | None = None,
    llm_url: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "agent_runtime.settings",
            "DEBUG": "false",
            "DJANGO_SECRET_KEY": SECRET_KEY,
            "INTERNAL_API_KEY": API_KEY,
            "DATABASE_URL": database_url,
            "LLM_MAX_RETRIES": "0",
            "RATELIMIT_ENABLE": "false",
            "KEEPALIVE_SECONDS": "1",
            "TURN_LOCK_WAIT_SECONDS": "5",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    if llm_url:
        env["LLM_BASE_URL"] = llm_url
    env.update(extra or {})
    return env


def manage(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``manage.py ARGV...`` in a subprocess of the repository, its output captured."""
    return subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def migrate(env: dict[str, str]) -> None:
    """``manage.py migrate`` once per database (per test run)."""
    database_url = env["DATABASE_URL"]
    with _migrate_lock:
        if database_url in _migrated:
            return
        done = manage("migrate", "--noinput", "-v", "0", env=env)
        if done.returncode != 0:
            raise StartError(
                f"migrate failed for {database_url} (exit {done.returncode}):\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        _migrated.add(database_url)


class Runtime:
    """One daphne process serving the runtime."""

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str | None = None,
        llm_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        name: str = "runtime",
    ) -> None:
        self.name = name
        self.env = runtime_env(
            database_url=database_url, redis_url=redis_url, llm_url=llm_url, extra=extra_env
        )
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        fd, log = tempfile.mkstemp(prefix=f"e2e-{name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log)

    # --- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> Runtime:
        if self.proc is not None and self.proc.poll() is None:
            return self
        migrate(self.env)
        log = self.log_path.open("ab")
        log.write(f"--- starting daphne {self.name} on port {self.port}\n".encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(
                [
                    *_daphne(),
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "agent_runtime.asgi:application",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()  # the child holds its own descriptor
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        with httpx.Client(timeout=3.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise StartError(
                        f"daphne {self.name} exited with {self.proc.returncode} during start-up:"
                        f"\n{self.log_tail()}"
                    )
                try:
                    response = client.get(f"{self.url}/health")
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:500]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                time.sleep(0.1)
        raise StartError(
            f"daphne {self.name} did not answer GET /health within {START_TIMEOUT:.0f} s "
            f"(last: {last}):\n{self.log_tail()}"
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)

    def restart(self) -> Runtime:
        """Stop and start again on the same port (clients keep their URLs)."""
        self.stop()
        return self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop the process and remove its log."""
        self.stop()
        with contextlib.suppress(OSError):
            self.log_path.unlink()
