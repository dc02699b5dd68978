"""Helpers of the API tests: a real ``cspon-rs serve`` subprocess on a free loopback port, a real SQLite
file in a temp folder, users created through the real CRUD, small seeded GeoTIFFs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CSPON_SHARED_DATA", REPO / ".." / "shared" / "data"))
HONGKONG = REPO / "data_samples" / "hongkong"
PYTHON = sys.executable


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A ``cspon-rs serve`` subprocess."""

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

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

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
        return httpx.Client(base_url=f"{self.base}/api/v1", headers=headers, timeout=60.0)


def add_user(db_url: str, name: str, role: str, county: str | None = None, team: str | None = None) -> str:
    """Create a user directly in the store (real CRUD) and return its token."""
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


def write_geotiff(path: Path, *, seed: int, size: int = 64, bands: int = 4, shift: bool = False) -> Path:
    """A small seeded uint16 GeoTIFF in EPSG:4326 near Hong Kong (10 m-ish pixels)."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    data = rng.integers(800, 1200, size=(bands, size, size), dtype=np.uint16)
    if shift:
        data[:, 20:40, 20:40] += 2500  # a bright "new building"
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=size, height=size, count=bands, dtype="uint16", crs="EPSG:4326",
        transform=from_origin(114.10, 22.40, 0.0001, 0.0001),
    ) as dst:
        dst.write(data)
    return path
