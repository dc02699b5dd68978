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
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from cspon_rs.api.db import make_engine, make_sessionmaker, session_scope
from cspon_rs.api.settings import ServeSettings, settings_from_env, settings_to_env
from cspon_rs.store.api_crud import (
    append_job_log,
    claim_next_job,
    finish_job,
    get_job,
    recover_interrupted_jobs,
)

__all__ = [
    "INTERRUPTED_REASON",
    "recover_jobs",
    "run_worker",
    "set_parent_death_signal",
    "start_worker_process",
]

_log = logging.getLogger("cspon_rs.api.worker")

INTERRUPTED_REASON = (
    "interrupted: the service stopped while this job was running (worker gone); no warnings were written "
    "by it -- submit the job again"
)


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

    while not stop.requested and not parent_gone() and (max_jobs is None or done < max_jobs):
        with session_scope(factory) as session:
            job = claim_next_job(session)
        if job is None:
            time.sleep(settings.worker_poll_s)
            continue
        done += 1
        job_dir = settings.data_dir / "jobs" / str(job.id)
        job_dir.mkdir(parents=True, exist_ok=True)
        runner_log = job_dir / "runner.log"
        with session_scope(factory) as session:
            append_job_log(session, job.id, f"started by worker pid {os.getpid()}")
        with open(runner_log, "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cspon_rs.api.jobrunner", str(job.id)],
                env={**os.environ, **settings_to_env(settings)},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=set_parent_death_signal if sys.platform.startswith("linux") else None,
            )
            outcome: tuple[str, str] | None = None
            while proc.poll() is None:
                time.sleep(0.3)
                if stop.requested or parent_gone():
                    _stop_child(proc)
                    outcome = ("failed", INTERRUPTED_REASON)
                    break
                with session_scope(factory) as session:
                    current = get_job(session, job.id)
                    cancel = current.cancel_requested and current.state == "running"
                if cancel:
                    _stop_child(proc)
                    outcome = ("cancelled", "cancelled by user")
                    break
        with session_scope(factory) as session:
            if outcome is None and get_job(session, job.id).state == "running":
                detail = _tail(runner_log)
                outcome = (
                    "failed",
                    f"job process exited with code {proc.returncode} without finishing"
                    + (f": {detail}" if detail else ""),
                )
            if outcome is not None:
                finish_job(
                    session, job.id, outcome[0], error=outcome[1], message=f"{outcome[0]}: {outcome[1]}"
                )
    engine.dispose()


def main() -> None:
    """Entry point of ``python -m cspon_rs.api.worker``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    parent = os.environ.get("CSPON_WORKER_PARENT")
    run_worker(settings_from_env(), parent_pid=int(parent) if parent else None)


if __name__ == "__main__":
    main()
