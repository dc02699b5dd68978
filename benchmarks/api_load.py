"""Concurrent load on a real ``cspon-rs serve``: N clients for D seconds, mixed reads and writes.

Each client is an independent HTTP connection looping over a seeded mix of requests:

* bureau: list warnings (``limit=50``), list with filters (category / status / min_priority / bbox), one
  warning, statistics, assign to a team;
* field team: read a warning and post a verification with the version just read (201, or 409/422 when
  another client got there first -- both are correct answers);
* researcher: submit a detection job (202; the service's worker is off unless ``--worker``).

It prints requests/s, p50/p95/p99 latency (ms), the count of 5xx answers and of dropped connections
(connect / read errors and timeouts). 4xx answers are counted by code but are not errors: conflicts are
part of the mix. The server runs on loopback against a fresh SQLite file, or the PostgreSQL/PostGIS
database given with ``--pg`` (in a throw-away schema, dropped afterwards).

Usage (repository root)::

    .venv/bin/python benchmarks/api_load.py --clients 200 --duration 60
    .venv/bin/python benchmarks/api_load.py --clients 200 --duration 60 \\
        --pg postgresql+psycopg://cspon:cspon@localhost:5432/cspon_test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "api"))

from apitest_support import Server, add_user, seed_warnings, write_geotiff  # noqa: E402

__all__ = ["LoadResult", "Target", "run_load", "seed_target"]


@dataclass
class Target:
    """What the clients need: base URL, tokens of the three roles, warning ids, a scene and layers."""

    base: str
    bureau: str
    field_token: str
    researcher: str
    warning_ids: list[str]
    scene_id: int | None = None
    layers: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadResult:
    """Figures of one run (latencies in ms)."""

    clients: int
    duration_s: float
    requests: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    codes: Counter[int] = field(default_factory=Counter)
    dropped: int = 0
    dropped_kinds: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)

    @property
    def server_errors(self) -> int:
        """Count of 5xx answers."""
        return sum(n for code, n in self.codes.items() if code >= 500)

    def percentile(self, q: float) -> float:
        """Latency percentile ``q`` in [0, 100] (ms), nearest rank."""
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]

    def summary(self) -> dict[str, Any]:
        """Printable figures."""
        return {
            "clients": self.clients,
            "duration_s": round(self.duration_s, 1),
            "requests": self.requests,
            "req_per_s": round(self.requests / self.duration_s, 1) if self.duration_s else 0.0,
            "p50_ms": round(self.percentile(50), 1),
            "p95_ms": round(self.percentile(95), 1),
            "p99_ms": round(self.percentile(99), 1),
            "median_ms": round(statistics.median(self.latencies_ms), 1) if self.latencies_ms else None,
            "5xx": self.server_errors,
            "dropped": self.dropped,
            "dropped_kinds": dict(self.dropped_kinds),
            "codes": {str(k): v for k, v in sorted(self.codes.items())},
            "mix": dict(self.by_kind),
        }


_MIX: list[tuple[str, int]] = [
    ("list", 35),
    ("filter", 20),
    ("one", 10),
    ("stats", 5),
    ("assign", 12),
    ("verify", 12),
    ("job", 6),
]


async def _client(
    c: httpx.AsyncClient, target: Target, mix: list[tuple[str, int]], deadline: list[float], seed: int,
    result: LoadResult, ready: asyncio.Event,
) -> None:
    rng = random.Random(seed)
    kinds = [k for k, _ in mix]
    weights = [w for _, w in mix]
    auth = {
        "bureau": {"Authorization": f"Bearer {target.bureau}"},
        "field": {"Authorization": f"Bearer {target.field_token}"},
        "researcher": {"Authorization": f"Bearer {target.researcher}"},
    }
    await ready.wait()
    async with c:
        while time.monotonic() < deadline[0]:
            kind = rng.choices(kinds, weights)[0]
            wid = rng.choice(target.warning_ids)
            start = time.perf_counter()
            try:
                if kind == "list":
                    r = await c.get("/warnings", params={"limit": 50}, headers=auth["bureau"])
                elif kind == "filter":
                    params = rng.choice(
                        [
                            {"category": "未批先建", "limit": 50},
                            {"status": "new", "limit": 50},
                            {"min_priority": 50, "limit": 50},
                            {"bbox": "114.10,22.29,114.40,22.31", "limit": 50},
                        ]
                    )
                    r = await c.get("/warnings", params=params, headers=auth["bureau"])
                elif kind == "one":
                    r = await c.get(f"/warnings/{wid}", headers=auth["bureau"])
                elif kind == "stats":
                    r = await c.get("/statistics", params={"by": "category"}, headers=auth["bureau"])
                elif kind == "assign":
                    r = await c.post(
                        f"/warnings/{wid}/assign", json={"team": rng.choice(["t1", "t2"])}, headers=auth["bureau"]
                    )
                elif kind == "verify":
                    seen = await c.get(f"/warnings/{wid}", headers=auth["field"])
                    result.requests += 1
                    result.codes[seen.status_code] += 1
                    version = seen.json().get("version", 1) if seen.status_code == 200 else 1
                    start = time.perf_counter()
                    r = await c.post(
                        f"/warnings/{wid}/verifications",
                        data={"result": rng.choice(["illegal", "legal"]), "expected_version": str(version)},
                        headers=auth["field"],
                    )
                else:
                    if target.scene_id is None:
                        continue
                    r = await c.post(
                        "/jobs",
                        json={
                            "scene_id": target.scene_id,
                            "period": "2018Q1",
                            "county_code": "810000",
                            "checkpoint": "spectral",
                            **target.layers,
                        },
                        headers=auth["researcher"],
                    )
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                result.dropped += 1
                result.dropped_kinds[type(exc).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            result.latencies_ms.append((time.perf_counter() - start) * 1000)
            result.requests += 1
            result.codes[r.status_code] += 1
            result.by_kind[kind] += 1


async def _run(target: Target, clients: int, duration_s: float, mix: list[tuple[str, int]], timeout_s: float,
               seed: int) -> LoadResult:
    result = LoadResult(clients=clients, duration_s=duration_s)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    # Plain-HTTP clients made up front (no TLS context each), so all start together when ``ready`` is set.
    made = [
        httpx.AsyncClient(base_url=f"{target.base}/api/v1", timeout=timeout_s, limits=limits, verify=False)
        for _ in range(clients)
    ]
    ready = asyncio.Event()
    deadline = [0.0]
    tasks = [
        asyncio.create_task(_client(c, target, mix, deadline, seed + i, result, ready)) for i, c in enumerate(made)
    ]
    start = time.monotonic()
    deadline[0] = start + duration_s
    ready.set()
    await asyncio.gather(*tasks)
    result.duration_s = time.monotonic() - start
    return result


def run_load(
    target: Target,
    *,
    clients: int,
    duration_s: float,
    mix: list[tuple[str, int]] | None = None,
    timeout_s: float = 60.0,
    seed: int = 0,
) -> LoadResult:
    """Run ``clients`` concurrent clients against ``target`` for ``duration_s`` seconds.

    Args:
        target: Server and seeded data (see :func:`seed_target`).
        clients: Concurrent connections.
        duration_s: How long new requests are started (seconds); requests in flight then finish.
        mix: ``(kind, weight)`` pairs, kinds ``list filter one stats assign verify job``; default: all.
        timeout_s: Per-request timeout; a request that exceeds it counts as dropped.
        seed: Seed of the request mix.
    """
    return asyncio.run(_run(target, clients, duration_s, mix or _MIX, timeout_s, seed))


def seed_target(
    server: Server, *, warnings: int = 300, with_scene: bool = True, prefix: str = "load", period: str = "2018Q1"
) -> Target:
    """Users of the three roles (names start with ``prefix``), ``warnings`` stored warnings in county 810000
    for ``period`` and (optionally) an uploaded scene and layers."""
    ids = seed_warnings(server.db_url, "810000", period, warnings)
    target = Target(
        base=server.base,
        bureau=add_user(server.db_url, f"{prefix}-bureau", "bureau", "810000"),
        field_token=add_user(server.db_url, f"{prefix}-field", "field", "810000", "t1"),
        researcher=add_user(server.db_url, f"{prefix}-researcher", "researcher", "810000"),
        warning_ids=ids,
    )
    if not with_scene:
        return target
    tmp = Path(tempfile.mkdtemp(prefix="cspon-load-"))
    headers = {"Authorization": f"Bearer {target.researcher}"}
    with httpx.Client(base_url=f"{server.base}/api/v1", headers=headers, timeout=120) as c:
        files = {}
        for name, seed, shift in (("before", 1, False), ("after", 2, True)):
            path = write_geotiff(tmp / f"{name}.tif", seed=seed, shift=shift)
            files[name] = (path.name, path.read_bytes(), "image/tiff")
        scene = c.post("/scenes/upload", data={"name": "load", "county_code": "810000"}, files=files)
        if scene.status_code != 201:
            raise RuntimeError(f"scene upload failed: {scene.status_code} {scene.text[:300]}")
        target.scene_id = scene.json()["id"]
        hk = REPO / "data_samples" / "hongkong"
        for kind, file_name in (("permits", "permits.gpkg"), ("control_lines", "control_lines.gpkg")):
            layer = c.post(
                "/layers",
                data={"kind": kind},
                files={"file": (file_name, (hk / file_name).read_bytes(), "application/geopackage+sqlite3")},
            )
            if layer.status_code != 201:
                raise RuntimeError(f"layer upload failed: {layer.status_code} {layer.text[:300]}")
            target.layers[f"{kind}_path"] = layer.json()["path"]
    return target


class _PgServer(Server):
    """The same server against a PostgreSQL URL."""

    pg_url: str = ""

    @property
    def db_url(self) -> str:
        return self.pg_url


def _pg_scratch(url: str) -> tuple[str, str]:
    """A fresh schema on the PostgreSQL server at ``url``; returns ``(url using it, schema name)``."""
    import uuid

    from sqlalchemy import create_engine, text

    schema = f"load_{uuid.uuid4().hex[:10]}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema},public", schema


def _drop_pg_schema(url: str, schema: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--warnings", type=int, default=2000, help="seeded warnings")
    parser.add_argument("--pg", default=None, help="PostgreSQL URL (a throw-away schema is made and dropped)")
    parser.add_argument("--worker", action="store_true", help="run the job worker too (jobs then execute)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout (s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        extra = [] if args.worker else ["--no-worker"]
        schema = None
        if args.pg:
            scratch_url, schema = _pg_scratch(args.pg)
            srv: Server = _PgServer(root / "unused.db", root / "data", root / "serve.log", extra)
            srv.pg_url = scratch_url  # type: ignore[attr-defined]
        else:
            srv = Server(root / "cspon.db", root / "data", root / "serve.log", extra)
        srv.start()
        try:
            target = seed_target(srv, warnings=args.warnings)
            result = run_load(target, clients=args.clients, duration_s=args.duration, timeout_s=args.timeout)
            figures = {"store": "postgresql" if args.pg else "sqlite", **result.summary()}
            print(json.dumps(figures, ensure_ascii=False, indent=2))
            if args.json:
                args.json.write_text(json.dumps(figures, ensure_ascii=False, indent=2))
            health = httpx.get(f"{srv.base}/api/v1/health", timeout=30).json()
            print("health after the run:", json.dumps(health))
            log = srv.log_path.read_text(errors="replace")
            errors = [ln for ln in log.splitlines() if "Traceback" in ln]
            print(f"tracebacks in the server log: {len(errors)}")
            if errors:
                first = log.index("Traceback")
                print(log[max(0, first - 300): first + 4000])
        finally:
            srv.stop()
            if schema is not None:
                _drop_pg_schema(args.pg, schema)


if __name__ == "__main__":
    main()
