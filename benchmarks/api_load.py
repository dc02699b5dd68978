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

__all__ = ["AttackResult", "LoadResult", "Target", "run_attack_comparison", "run_load", "seed_target", "seed_tiles"]


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
    #: Tiles the review map requests: ``(layer, z, x, y)`` at every zoom of the tile index (empty: no tiles).
    tiles: list[tuple[str, int, int, int]] = field(default_factory=list)
    #: Tiles below the index's ``minzoom`` (the low-zoom attack).
    low_tiles: list[tuple[str, int, int, int]] = field(default_factory=list)


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
                elif kind == "tile":
                    if not target.tiles:
                        continue
                    layer, z, x, y = rng.choice(target.tiles)
                    r = await c.get(f"/map/810000/2018Q1/tiles/{layer}/{z}/{x}/{y}.png", headers=auth["bureau"])
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


def seed_tiles(server: Server, target: Target, *, px: int = 4096, tmp: Path | None = None) -> None:
    """A ``px``² 3-band scene pair *without overviews* (about 1 m pixels, uploaded by the researcher) recorded as
    the county's succeeded job, so the map serves its tiles; fills ``target.tiles`` with tiles at every zoom the
    review map requests (``minzoom`` .. ``max_native_zoom + 2`` of ``GET .../tiles``, around the centre) and
    ``target.low_tiles`` with coarser ones (the low-zoom attack)."""
    import morecantile
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    sys.path.insert(0, str(REPO / "tests" / "web"))
    from webtest_support import _record_run_as_job

    tmp = tmp or Path(tempfile.mkdtemp(prefix="cspon-tiles-"))
    x0, y0 = 12_710_000.0, 2_560_000.0  # EPSG:3857 near Hong Kong
    files = {}
    for name, seed in (("before", 11), ("after", 12)):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:px, 0:px]
        base = ((xx // 64 + yy // 64) % 2 * 80 + 60).astype(np.uint8)
        data = np.stack([base + rng.integers(0, 40, base.shape, dtype=np.uint8) for _ in range(3)])
        path = tmp / f"{name}_big.tif"
        with rasterio.open(path, "w", driver="GTiff", width=px, height=px, count=3, dtype="uint8",
                           crs="EPSG:3857", transform=from_origin(x0, y0, 1.0, 1.0), tiled=True,
                           blockxsize=256, blockysize=256) as dst:
            dst.write(data)
        files[name] = (path.name, path.read_bytes(), "image/tiff")
    headers = {"Authorization": f"Bearer {target.researcher}"}
    with httpx.Client(base_url=f"{server.base}/api/v1", headers=headers, timeout=300) as c:
        scene = c.post("/scenes/upload", data={"name": "tiles", "county_code": "810000"}, files=files)
        if scene.status_code != 201:
            raise RuntimeError(f"tile scene upload failed: {scene.status_code} {scene.text[:300]}")
        _record_run_as_job(server.db_url, scene.json()["id"], dict(target.layers), tmp)
        index = c.get("/map/810000/2018Q1/tiles", headers={"Authorization": f"Bearer {target.bureau}"}).json()
    tms = morecantile.tms.get("WebMercatorQuad")
    lon, lat = tms.lnglat(x0 + px / 2, y0 - px / 2)
    info = index["layers"]["before"]
    for z in range(info["minzoom"], info["max_native_zoom"] + 3):
        centre = tms.tile(lon, lat, z)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for layer in ("before", "after"):
                    target.tiles.append((layer, z, centre.x + dx, centre.y + dy))
    for z in range(max(0, info["minzoom"] - 8), info["minzoom"]):
        low = tms.tile(lon, lat, z)
        target.low_tiles.append(("before", z, low.x, low.y))


@dataclass
class AttackResult:
    """What the attackers got: answers by code, and cut-offs (connection closed without an answer)."""

    slow_bodies: Counter[str] = field(default_factory=Counter)
    low_zoom: Counter[int] = field(default_factory=Counter)


async def _slow_body(base: str, stop: asyncio.Event, out: AttackResult, token: str | None) -> None:
    """One connection at a time that sends a POST's headers and then a byte every 5 s, never the whole body;
    reconnects whenever the server answers or closes."""
    host, port = base.removeprefix("http://").split(":")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            out.slow_bodies["connect_error"] += 1
            await asyncio.sleep(0.5)
            continue
        writer.write((f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
                      "Content-Length: 4000\r\n\r\n{").encode())
        try:
            while not stop.is_set():
                await writer.drain()
                try:
                    head = await asyncio.wait_for(reader.read(64), 5.0)
                except TimeoutError:
                    writer.write(b" ")
                    continue
                out.slow_bodies[head.split(b" ")[1].decode() if head.startswith(b"HTTP/") else "closed"] += 1
                break
        except OSError:
            out.slow_bodies["reset"] += 1
        finally:
            writer.close()


async def _low_zoom(target: Target, stop: asyncio.Event, out: AttackResult, seed: int) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=f"{target.base}/api/v1", timeout=600,
                                 headers={"Authorization": f"Bearer {target.bureau}"}) as c:
        while not stop.is_set():
            layer, z, x, y = rng.choice(target.low_tiles)
            try:
                r = await c.get(f"/map/810000/2018Q1/tiles/{layer}/{z}/{x}/{y}.png")
                out.low_zoom[r.status_code] += 1
            except httpx.HTTPError:
                out.low_zoom[0] += 1


async def _run_attacked(target: Target, clients: int, duration_s: float, mix: list[tuple[str, int]],
                        timeout_s: float, seed: int, slow: int, low: int) -> tuple[LoadResult, AttackResult]:
    out = AttackResult()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_slow_body(target.base, stop, out, None if i % 2 else target.field_token))
             for i in range(slow)]
    if target.low_tiles:
        tasks += [asyncio.create_task(_low_zoom(target, stop, out, seed + i)) for i in range(low)]
    await asyncio.sleep(1.0)  # the attack is in place before the normal clients start
    try:
        result = await _run(target, clients, duration_s, mix, timeout_s, seed)
    finally:
        stop.set()
        await asyncio.wait(tasks, timeout=30)
    return result, out


def run_attack_comparison(target: Target, *, clients: int, duration_s: float, timeout_s: float = 60.0,
                          slow: int = 50, low: int = 20, seed: int = 0,
                          mix: list[tuple[str, int]] | None = None) -> dict[str, Any]:
    """The same normal clients for ``duration_s`` without, then with, ``slow`` slow-body connections and
    ``low`` low-zoom tile clients; returns both summaries, what the attackers got and the p95 ratio."""
    mix = mix or [*_MIX, ("tile", 15)]
    if target.tiles:  # both phases see the same (warm) tile cache, as a map user's second visit does
        with httpx.Client(base_url=f"{target.base}/api/v1", timeout=300,
                          headers={"Authorization": f"Bearer {target.bureau}"}) as c:
            for layer, z, x, y in target.tiles:
                c.get(f"/map/810000/2018Q1/tiles/{layer}/{z}/{x}/{y}.png")
    calm = run_load(target, clients=clients, duration_s=duration_s, timeout_s=timeout_s, seed=seed, mix=mix)
    attacked, attack = asyncio.run(_run_attacked(target, clients, duration_s, mix, timeout_s, seed, slow, low))
    p95_calm, p95_attacked = calm.percentile(95), attacked.percentile(95)
    return {
        "without_attack": calm.summary(),
        "with_attack": attacked.summary(),
        "attack": {"slow_body_connections": slow, "slow_body_answers": dict(out_counter(attack.slow_bodies)),
                   "low_zoom_clients": low, "low_zoom_codes": {str(k): v for k, v in attack.low_zoom.items()}},
        "normal_5xx_with_attack": attacked.server_errors,
        "normal_timeouts_with_attack": attacked.dropped,
        "p95_ratio": round(p95_attacked / p95_calm, 2) if p95_calm else None,
    }


def out_counter(counter: Counter[str]) -> list[tuple[str, int]]:
    """A counter as sorted pairs (stable JSON)."""
    return sorted(counter.items())


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
    parser.add_argument("--attack", action="store_true",
                        help="two phases of --duration s: without, then with 50 slow-body connections and 20 "
                             "low-zoom tile clients; tiles join the normal mix")
    parser.add_argument("--slow", type=int, default=50, help="slow-body connections of --attack")
    parser.add_argument("--low", type=int, default=20, help="low-zoom tile clients of --attack")
    parser.add_argument("--tile-px", type=int, default=4096, help="size of the tile scene of --attack (pixels)")
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
            if args.attack:
                seed_tiles(srv, target, px=args.tile_px, tmp=root)
                figures = {"store": "postgresql" if args.pg else "sqlite",
                           **run_attack_comparison(target, clients=args.clients, duration_s=args.duration,
                                                   timeout_s=args.timeout, slow=args.slow, low=args.low)}
            else:
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
