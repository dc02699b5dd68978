"""Helpers of the browser tests: a real ``cspon-rs serve`` subprocess, a real SQLite store seeded with
the bundled Hong Kong sample, headless Chromium through Playwright.

Names are unique to this area (``webtest_support``) because conftest/helper module names clash across
test folders.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
HONGKONG = REPO / "data_samples" / "hongkong"
SCREENSHOTS = REPO / "artifacts" / "screenshots"
PYTHON = sys.executable
COUNTY = "810000"
PERIOD = "2018Q1"


def chromium_path() -> str | None:
    """A Chromium/Chrome binary on this machine (``CSPON_CHROMIUM`` wins), or None."""
    candidates = [os.environ.get("CSPON_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                  shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome")]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A ``cspon-rs serve`` subprocess on a free loopback port."""

    db_path: Path
    data_dir: Path
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "cspon_rs.cli", "serve", "--db", self.db_url, "--data-dir", str(self.data_dir),
             "--port", str(self.port), *self.extra_args],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base}/api/v1/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not come up in {timeout} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=f"{self.base}/api/v1", headers=headers, timeout=120.0)


def add_user(db_url: str, name: str, role: str, county: str | None = None, team: str | None = None) -> str:
    """Create a user through the real CRUD and return its token."""
    from cspon_rs.api.db import ensure_schema, make_engine, make_sessionmaker, session_scope
    from cspon_rs.store.api_crud import create_user

    ensure_schema(db_url)
    engine = make_engine(db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            _user, token = create_user(session, name, role, county_code=county, team=team)
    finally:
        engine.dispose()
    return token


def wait_job(client: httpx.Client, job_id: int, timeout: float = 240.0) -> dict[str, object]:
    """Poll a job until it is final; returns its JSON."""
    deadline = time.monotonic() + timeout
    job: dict[str, object] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} not finished after {timeout} s: {job}")
