"""Latency of the main read endpoints of the HTTP API on a seeded SQLite store.

Starts a real ``cspon-rs serve`` on a free port with N stored warnings (default 5000) in one county and
prints median / 95th-percentile latency per endpoint (ms) over R requests each, sequentially from one client.

    PYTHONPATH=. .venv/bin/python benchmarks/api_latency.py --warnings 5000 --requests 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "api"))

from apitest_support import Server, add_user, seed_warnings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warnings", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        srv = Server(root / "cspon.db", root / "data", root / "serve.log", ["--no-worker"]).start()
        try:
            t0 = time.perf_counter()
            ids = seed_warnings(srv.db_url, "810000", "2018Q1", args.warnings)
            print(f"seeded {len(ids)} warnings in {time.perf_counter() - t0:.1f} s")
            token = add_user(srv.db_url, "bench", "bureau", "810000")
            cases = {
                "GET /warnings?limit=100": ("/warnings", {"limit": 100}),
                "GET /warnings?min_priority=90": ("/warnings", {"min_priority": 90, "limit": 100}),
                "GET /warnings?bbox=...": ("/warnings", {"bbox": "114.10,22.29,114.40,22.31", "limit": 100}),
                "GET /warnings.geojson?limit=500": ("/warnings.geojson", {"limit": 500}),
                "GET /warnings/{id}": (f"/warnings/{ids[len(ids) // 2]}", {}),
                "GET /statistics?by=category": ("/statistics", {"by": "category"}),
            }
            with srv.client(token) as client:
                print(f"{'endpoint':<36} {'p50 ms':>8} {'p95 ms':>8}")
                for label, (path, params) in cases.items():
                    times = []
                    for _ in range(args.requests):
                        start = time.perf_counter()
                        response = client.get(path, params=params)
                        times.append((time.perf_counter() - start) * 1000)
                        response.raise_for_status()
                    times.sort()
                    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
                    print(f"{label:<36} {statistics.median(times):8.1f} {p95:8.1f}")
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
