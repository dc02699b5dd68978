"""Report benchmark: the period report of a county list made as a job by a real ``cspon-rs serve``.

Seeds a store with ``--n`` warnings (default 3,000; ``benchmarks/seed_county.py``: polygons on the Hong Kong
scene, 3 field photos of 4000 x 3000 px on each of the 50 highest-priority verified warnings), starts the
service with its job worker, submits ``POST /exports/report-jobs`` (default: 50 核查表 sheets) as a bureau
user, polls the job, downloads the PDF, and prints:

* wall time from submit to ``succeeded`` (and the job's own started → finished time),
* RSS of the server process (uvicorn) before and after, and the peak RSS of the job process (the report
  is drawn in the worker's child process, ``python -m cspon_rs.api.jobrunner``),
* the PDF size, pages, sheets and photos,
* a second submit of the same request (cached: same job, no work).

Usage::

    python benchmarks/report_load.py                       # 3,000 warnings, SQLite in a temp folder
    python benchmarks/report_load.py --n 3000 --sheets 50 --db postgresql+psycopg://u:pw@host/cspon_bench

Targets (issue 22): done ≤ 120 s on 2 cores, server RSS growth ≤ 500 MB, PDF ≤ 50 MB.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))


class PeakRss:
    """Polls a process tree every 0.1 s: peak RSS of the root and of each descendant."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.root_peak = 0
        self.child_peak = 0
        self.child_cmd = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.root_peak = max(self.root_peak, self.root.memory_info().rss)
                for child in self.root.children(recursive=True):
                    try:
                        rss = child.memory_info().rss
                        if "jobrunner" in " ".join(child.cmdline()) and rss > self.child_peak:
                            self.child_peak, self.child_cmd = rss, " ".join(child.cmdline()[-3:])
                    except psutil.Error:
                        continue
            except psutil.Error:
                return
            time.sleep(0.1)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--sheets", type=int, default=50)
    ap.add_argument("--db", default=None, help="store URL (default: a SQLite file in a temp folder)")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temporary)")
    args = ap.parse_args(argv)

    from seed_county import seed_county
    from serve_support import Server, add_user

    work = args.keep or Path(tempfile.mkdtemp(prefix="report_load."))
    work.mkdir(parents=True, exist_ok=True)
    db_path = work / "county.sqlite"
    db_url = args.db or f"sqlite:///{db_path}"
    data = work / "data"
    t0 = time.perf_counter()
    seeded = seed_county(db_url, n=args.n, data_dir=data, photos=3, photo_warnings=50)
    print(f"seeded {seeded.warnings} warnings, {seeded.photos} photos in {time.perf_counter() - t0:.0f} s")
    extra = ["--db", db_url] if args.db else []
    server = Server(db_path, data, work / "serve.log", extra).start()
    try:
        token = add_user(db_url, "bench-bureau", "bureau", "810000")
        proc = psutil.Process(server.proc.pid)  # type: ignore[union-attr]
        with httpx.Client(base_url=f"{server.base}/api/v1", headers={"Authorization": f"Bearer {token}"},
                          timeout=120) as c:
            c.get("/warnings", params={"period": "2018Q1", "limit": 5}).raise_for_status()  # warm the server
            rss_before = proc.memory_info().rss
            body = {"period": "2018Q1", "sheets": args.sheets}
            with PeakRss(proc.pid) as peak:
                started = time.perf_counter()
                job = c.post("/exports/report-jobs", json=body).json()
                while True:
                    job = c.get(f"/jobs/{job['id']}").json()
                    if job["state"] in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(0.5)
                wall = time.perf_counter() - started
            rss_after = proc.memory_info().rss
            if job["state"] != "succeeded":
                print(f"job {job['state']}: {job['error']}")
                return 1
            pdf = c.get(job["result"]["download_url"].removeprefix("/api/v1"))
            pdf.raise_for_status()
            from pypdf import PdfReader

            pages = len(PdfReader(io.BytesIO(pdf.content)).pages)
            t = time.perf_counter()
            again = c.post("/exports/report-jobs", json=body)
            cached_s = time.perf_counter() - t
        import datetime as dt

        ran = (dt.datetime.fromisoformat(job["finished_at"]) - dt.datetime.fromisoformat(job["started_at"]))
        res = job["result"]
        load = os.getloadavg()[0]
        print()
        print(f"| report of {res['warnings']:,} warnings, {res['sheets']} 核查表 sheets, {res['photos']} photos "
              f"| figure | target |")
        print("|---|---:|---|")
        print(f"| submit → succeeded (wall) | {wall:.1f} s | ≤ 120 s |")
        print(f"| job process started → finished | {ran.total_seconds():.1f} s | |")
        print(f"| server RSS growth (uvicorn, before → after) | {(rss_after - rss_before) / 2**20:+.0f} MB "
              f"({rss_before / 2**20:.0f} → {rss_after / 2**20:.0f} MB; peak {peak.root_peak / 2**20:.0f} MB) "
              f"| ≤ 500 MB |")
        print(f"| peak RSS of the job process (whole report) | {peak.child_peak / 2**20:.0f} MB | |")
        print(f"| PDF | {len(pdf.content) / 1e6:.1f} MB, {pages} pages | ≤ 50 MB |")
        print(f"| same request again (cached) | HTTP {again.status_code}, same job "
              f"{again.json().get('id') == job['id']}, {cached_s * 1000:.0f} ms | |")
        print(f"\n(1-min load average at the end: {load:.1f} on {psutil.cpu_count()} CPUs; "
              f"store {db_url.split(':')[0]})")
    finally:
        server.stop()
        if args.keep is None:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
