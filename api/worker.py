"""The job worker: a separate process that polls the jobs table and runs one job at a time.

Each job runs in its own child process (``python -m cspon_rs.api.jobrunner <id>``) so that it can be
cancelled (terminated) without taking the worker down, and so that a crash in native code fails one job
only. Job state lives in the database; the worker keeps none of its own.

Restart semantics (documented in ``docs/api.md``): when the service starts, every job still marked
``running`` belongs to a worker that no longer exists, and is marked **failed** with the reason -- not
re-queued. On Linux the worker and the job process ask the kernel to SIGTERM them when their parent dies
(``PR_SET_PDEATHSIG``), and the worker also polls its parent pid, so ``kill -9`` of the server does not
leave a job running unsupervised.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from cspon_rs.api.db import make_engine, make_sessionmaker, session_scope
from cspon_rs.api.settings import ServeSettings, settings_from_env, settings_to_env
from cspon_rs.store.api_crud import (
    append_job_log,
    claim_next_job,
    finish_job,
    get_job,
    recover_interrupted_jobs,
)
from cspon_rs.store.db import retry_locked

__all__ = [
    "HEARTBEAT_FILE",
    "INTERRUPTED_REASON",
    "WorkerSupervisor",
    "read_heartbeat",
    "recover_jobs",
    "run_worker",
    "set_parent_death_signal",
    "start_worker_process",
]

_log = logging.getLogger("cspon_rs.api.worker")

#: Error of a job whose worker died; :func:`~cspon_rs.store.api_crud.finish_job` appends what it committed.
INTERRUPTED_REASON = (
    "interrupted: the job process or its worker stopped while this job was running -- submit the job again "
    "if needed"
)


#: File in the data directory the worker rewrites every poll: ``{"pid": int, "at": unix seconds}``.
HEARTBEAT_FILE = "worker.heartbeat"


def write_heartbeat(data_dir: Path, **extra: Any) -> None:
    """Record that this worker process is alive (atomic replace, so readers never see half a file)."""
    target = Path(data_dir) / HEARTBEAT_FILE
    tmp = target.with_name(f".{HEARTBEAT_FILE}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), **extra}))
        os.replace(tmp, target)
    except OSError as exc:  # a full disk must not kill the worker; /health will show it as stale
        _log.warning("cannot write heartbeat %s: %s", target, exc)


def read_heartbeat(data_dir: Path) -> dict[str, Any] | None:
    """The last heartbeat (``pid``, ``at``, ...) or ``None`` if there is none or it is unreadable."""
    try:
        data = json.loads((Path(data_dir) / HEARTBEAT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("at"), int | float) else None


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, sig, 0, 0, 0)
    except OSError:  # pragma: no cover - exotic libc
        pass


def recover_jobs(settings: ServeSettings) -> list[int]:
    """Fail jobs left ``running`` by a dead worker; returns their ids. Call before starting a worker."""
    engine = make_engine(settings.db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            return recover_interrupted_jobs(session, INTERRUPTED_REASON)
    finally:
        engine.dispose()


def start_worker_process(settings: ServeSettings) -> subprocess.Popen[bytes]:
    """Start ``python -m cspon_rs.api.worker`` as a child that dies with this process."""
    env = {**os.environ, **settings_to_env(settings), "CSPON_WORKER_PARENT": str(os.getpid())}
    return subprocess.Popen(
        [sys.executable, "-m", "cspon_rs.api.worker"],
        env=env,
        preexec_fn=set_parent_death_signal if sys.platform.startswith("linux") else None,
    )


class _Stop:
    requested = False

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.requested = True


def _stop_child(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


def run_worker(
    settings: ServeSettings, *, parent_pid: int | None = None, max_jobs: int | None = None
) -> None:
    """Poll for queued jobs and run them until stopped (SIGTERM/SIGINT) or the parent process dies.

    Args:
        settings: Service settings (database, data directory, poll interval).
        parent_pid: Exit when this process is no longer our parent.
        max_jobs: Stop after this many jobs (tests); ``None`` = forever.
    """
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    engine = make_engine(settings.db_url)
    factory = make_sessionmaker(engine)
    done = 0

    def parent_gone() -> bool:
        return parent_pid is not None and os.getppid() != parent_pid

    last_beat = 0.0

    def beat(job_id: int | None = None) -> None:
        nonlocal last_beat
        if time.monotonic() - last_beat >= 1.0:
            write_heartbeat(settings.data_dir, job=job_id)
            last_beat = time.monotonic()

    while not stop.requested and not parent_gone() and (max_jobs is None or done < max_jobs):
        beat()
        try:
            job = retry_locked(lambda: _claim(factory))
        except Exception:  # a database hiccup must not end the worker: log, wait, poll again
            _log.exception("could not claim a job; retrying in %.1f s", settings.worker_poll_s)
            time.sleep(settings.worker_poll_s)
            continue
        if job is None:
            time.sleep(settings.worker_poll_s)
            continue
        done += 1
        try:
            _run_one(settings, factory, job.id, stop, parent_gone, beat)
        except Exception:
            _log.exception("supervising job %s failed; the job is failed and the worker goes on", job.id)
            try:
                with session_scope(factory) as session:
                    finish_job(session, job.id, "failed", error="the worker lost track of this job (see its log)")
            except Exception:
                _log.exception("could not mark job %s failed", job.id)
    engine.dispose()


def _claim(factory: Any) -> Any:
    with session_scope(factory) as session:
        return claim_next_job(session)


def _run_one(
    settings: ServeSettings,
    factory: Any,
    job_id: int,
    stop: _Stop,
    parent_gone: Any,
    beat: Any,
) -> None:
    """Run job ``job_id`` (already ``running``) in its own process and record how it ended."""
    job_dir = settings.data_dir / "jobs" / str(job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    runner_log = job_dir / "runner.log"
    with session_scope(factory) as session:
        append_job_log(session, job_id, f"started by worker pid {os.getpid()}")
    with open(runner_log, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cspon_rs.api.jobrunner", str(job_id)],
            env={**os.environ, **settings_to_env(settings)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=set_parent_death_signal if sys.platform.startswith("linux") else None,
        )
        outcome: tuple[str, str] | None = None
        while proc.poll() is None:
            time.sleep(0.3)
            beat(job_id)
            if stop.requested or parent_gone():
                _stop_child(proc)
                outcome = ("failed", INTERRUPTED_REASON)
                break
            try:
                with session_scope(factory) as session:
                    current = get_job(session, job_id)
                    cancel = current.cancel_requested and current.state == "running"
            except Exception:  # a locked database only delays the cancel check
                _log.warning("cancel check of job %s failed; trying again", job_id, exc_info=True)
                continue
            if cancel:
                _stop_child(proc)
                outcome = ("cancelled", "cancelled by user")
                break

    def _finish() -> None:
        nonlocal outcome
        with session_scope(factory) as session:
            if outcome is None and get_job(session, job_id).state == "running":
                detail = _tail(runner_log)
                outcome = (
                    "failed",
                    f"job process exited with code {proc.returncode} without finishing"
                    + (f": {detail}" if detail else ""),
                )
            if outcome is not None:
                finish_job(session, job_id, outcome[0], error=outcome[1], message=f"{outcome[0]}: {outcome[1]}")

    retry_locked(_finish)


@dataclass
class SupervisorState:
    """What the supervisor knows: the worker's pid, whether it runs, how often it was restarted."""

    pid: int | None
    running: bool
    restarts: int
    last_exit_code: int | None


class WorkerSupervisor:
    """Keeps one worker process alive next to the web server: starts it, restarts it when it exits.

    Before each restart the jobs the dead worker left ``running`` are failed with
    :data:`INTERRUPTED_REASON` (their committed stages are stated by the job's own record). Restarts back
    off from 1 s to 30 s while the worker keeps dying within a minute of its start.
    """

    def __init__(self, settings: ServeSettings, *, check_s: float = 0.5) -> None:
        self.settings = settings
        self.check_s = check_s
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WorkerSupervisor:
        """Start the worker and the watching thread."""
        self.proc = start_worker_process(self.settings)
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
        self._thread.start()
        return self

    def state(self) -> SupervisorState:
        """Current pid, liveness and restart count."""
        proc = self.proc
        return SupervisorState(
            pid=proc.pid if proc else None,
            running=proc is not None and proc.poll() is None,
            restarts=self.restarts,
            last_exit_code=self.last_exit_code,
        )

    def _watch(self) -> None:
        backoff = 1.0
        started = time.monotonic()
        while not self._stop.wait(self.check_s):
            proc = self.proc
            if proc is None or proc.poll() is None:
                continue
            self.last_exit_code = proc.returncode
            _log.error("job worker pid %s exited with code %s; restarting", proc.pid, proc.returncode)
            if time.monotonic() - started > 60:
                backoff = 1.0
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, 30.0)
            try:
                recover_jobs(self.settings)
            except Exception:
                _log.exception("could not fail the jobs of the dead worker; restarting it anyway")
            try:
                self.proc = start_worker_process(self.settings)
                self.restarts += 1
                started = time.monotonic()
            except OSError:
                _log.exception("could not restart the job worker")

    def stop(self, grace_s: float = 15.0) -> None:
        """Stop watching, then stop the worker (SIGTERM, then SIGKILL after ``grace_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.proc is not None:
            _stop_child(self.proc, grace_s)


def main() -> None:
    """Entry point of ``python -m cspon_rs.api.worker``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    parent = os.environ.get("CSPON_WORKER_PARENT")
    run_worker(settings_from_env(), parent_pid=int(parent) if parent else None)


if __name__ == "__main__":
    main()
