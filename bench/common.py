"""What the benchmarks share: child processes, the fake LLM, daphne, /proc readings, percentiles.

Children are started in their own process group (Ctrl-C reaches only the benchmark, which stops
them in order) with ``PR_SET_PDEATHSIG``, so they die with the benchmark even if it is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable
DAPHNE = shutil.which("daphne", path=str(VENV_BIN)) or str(ROOT / ".venv" / "bin" / "daphne")
FAKELLM = ROOT / "tests" / "fakellm.py"
ASGI_APP = "agent_runtime.asgi:application"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class BenchError(RuntimeError):
    """Something failed to run (as opposed to a figure missing its target)."""


# --- Subprocesses ----------------------------------------------------------------------------

_children: list[subprocess.Popen[bytes]] = []


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if the benchmark dies, even by SIGKILL.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()  # Ctrl-C in the terminal reaches only us; we stop the children in order.


def spawn(args: list[str], *, env: dict[str, str], log: Path, stdout_pipe: bool = False):
    logf = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout_pipe else logf,
        stderr=logf,
        preexec_fn=_die_with_parent,
    )
    proc._bench_log = logf  # type: ignore[attr-defined]
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        # Its whole process group (spawn made it a group leader): `make serve` is make, the
        # shell it execs into supervisord, and what that started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(Exception):
        proc._bench_log.close()  # type: ignore[attr-defined]
    if proc.stdout is not None:
        proc.stdout.close()
    if proc in _children:
        _children.remove(proc)


def stop_all() -> None:
    for proc in reversed(list(_children)):
        stop(proc)


def on_signal(signum: int, _frame: object) -> None:
    """For SIGTERM: unwind like Ctrl-C, so the ``finally`` blocks clean up."""
    raise KeyboardInterrupt(f"signal {signum}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- /proc -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the comm field: state is fields[0], so utime (14) and stime (15) are [11] and [12].
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid: int) -> int:
    """Resident set size in KiB (VmRSS of /proc/<pid>/status); 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- The fake LLM and daphne -----------------------------------------------------------------


@dataclass
class Fake:
    proc: subprocess.Popen[bytes]
    url: str

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_fake(tokens: int, delay: float, tmp: Path, name: str) -> Fake:
    """tests/fakellm.py as a subprocess answering every request with ``tokens`` tokens."""
    log = tmp / f"fake-{name}.log"
    cmd = [PYTHON, str(FAKELLM), "--port", "0", "--default-tokens", str(tokens)]
    proc = spawn([*cmd, "--delay", str(delay)], env=dict(os.environ), log=log, stdout_pipe=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()  # the fake prints READY within a second
    if not line.startswith("READY "):
        stop(proc)
        raise BenchError(f"the fake LLM did not start: {line!r}\n{tail(log)}")
    return Fake(proc, line.split(" ", 1)[1])


def migrate(env: dict[str, str], timeout: float = 120) -> None:
    """``manage.py migrate`` with the runtime's environment."""
    try:
        done = subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"migrate did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise BenchError(f"migrate failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@dataclass
class Runtime:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def spawn_daphne(
    env: dict[str, str],
    log: Path,
    *,
    app: str = ASGI_APP,
    wrapper: list[str] | None = None,
) -> Runtime:
    """daphne on a free port of 127.0.0.1; not yet ready (see ``wait_healthy``)."""
    port = free_port()
    cmd = [DAPHNE, "-b", "127.0.0.1", "-p", str(port), app]
    proc = spawn([*(wrapper or []), *cmd], env=env, log=log)
    return Runtime(proc, f"http://127.0.0.1:{port}", log)


def spawn_uvicorn(env: dict[str, str], log: Path, *, app: str = ASGI_APP) -> Runtime:
    """The same app under uvicorn (httptools, uvloop), for reference only: the runtime is served
    by daphne. Not yet ready (see ``wait_healthy``)."""
    port = free_port()
    cmd = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--lifespan", "off", "--no-access-log", "--log-level", "warning"]
    cmd += ["--http", "httptools", "--loop", "uvloop", "--backlog", "2048"]
    proc = spawn(cmd, env=env, log=log)
    return Runtime(proc, f"http://127.0.0.1:{port}", log)


def wait_healthy(runtime: Runtime, timeout: float = 60) -> None:
    """Until ``GET /health`` answers 200; BenchError (with the log's tail) otherwise."""
    deadline = time.monotonic() + timeout
    last = ""
    with httpx.Client(timeout=5, trust_env=False) as client:
        while time.monotonic() < deadline:
            if runtime.proc.poll() is not None:
                raise BenchError(
                    f"the server exited with {runtime.proc.returncode}:\n{tail(runtime.log)}"
                )
            try:
                r = client.get(f"{runtime.url}/health")
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:300]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
    raise BenchError(f"GET /health never answered 200 (last: {last})\n{tail(runtime.log)}")


def start_daphne(
    env: dict[str, str],
    log: Path,
    *,
    app: str = ASGI_APP,
    wrapper: list[str] | None = None,
) -> Runtime:
    runtime = spawn_daphne(env, log, app=app, wrapper=wrapper)
    wait_healthy(runtime)
    return runtime


# --- Figures ---------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Percentile by linear interpolation between closest ranks (q in 0..100)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def print_table(rows: list[tuple[str, ...]], *, header: bool = True, align: str = "") -> None:
    """Columns padded to width; ``align`` is "l" or "r" per column (default: the first left,
    the others right)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    align = align or "l" + "r" * (len(widths) - 1)
    for i, row in enumerate(rows):
        pairs = zip(row, widths, align, strict=True)
        cells = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in pairs]
        print("  ".join(cells).rstrip())
        if header and i == 0:
            print("  ".join("-" * w for w in widths))
