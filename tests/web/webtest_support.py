"""Helpers of the browser tests: a real ``cspon-rs serve`` subprocess, a real SQLite store seeded with
the bundled Hong Kong sample, headless Chromium through Playwright.

Names are unique to this area (``webtest_support``) because conftest/helper module names clash across
test folders.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_support import Server, add_user, free_port  # noqa: F401 - re-exported for the tests

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


TEAM = "一队"


@dataclass
class Seeded:
    """The running server and what was put into it."""

    server: Server
    bureau_token: str
    field_token: str
    assigned: list[str]

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.server.db_path)

    def warning_count(self, **where: Any) -> int:
        clauses = " AND ".join(f"{k} = ?" for k in where)
        sql = "SELECT count(*) FROM warnings WHERE period = ? AND county_code = ? AND is_warning = 1"
        with self.db() as con:
            return int(con.execute(sql + (f" AND {clauses}" if clauses else ""),
                                   (PERIOD, COUNTY, *where.values())).fetchone()[0])


def _label_patches(work: Path) -> Path:
    """The ``change_patches`` layer of the demo's reference label, made by the inference vectoriser.

    (A spectral detection + warning job on the pair takes minutes on 2 cores and finds ~1300 noisy
    patches; the labelled change gives the ~60 patches the sample's permits were drawn around.)
    """
    import numpy as np
    import rasterio

    from cspon_rs.inference.vectorize import PatchAttributes, vectorize_mask

    with rasterio.open(HONGKONG / "label.tif") as src:
        label = src.read(1)
        profile = src.profile
    profile.update(count=1, dtype="uint8", nodata=255)
    with rasterio.open(work / "mask.tif", "w", **profile) as dst:
        dst.write((label > 0).astype("uint8"), 1)
    profile.update(dtype="float32", nodata=-1)
    rng = np.random.default_rng(0)
    prob = np.where(label > 0, rng.uniform(0.6, 0.99, label.shape), 0.05).astype("float32")
    with rasterio.open(work / "prob.tif", "w", **profile) as dst:
        dst.write(prob, 1)
    attrs = PatchAttributes(t1="2016-09-27", t2="2018-03-23",
                            scene_before=str(HONGKONG / "before_20160927.tif"),
                            scene_after=str(HONGKONG / "after_20180323.tif"), detector="reference-label")
    patches = vectorize_mask(work / "mask.tif", work / "prob.tif", attrs)
    path = work / "change_patches.gpkg"
    patches.to_file(path, layer="change_patches", driver="GPKG")
    return path


def _record_run_as_job(db_url: str, scene_id: int, layers: dict[str, str], out_dir: Path) -> int:
    """Record the warning run as a succeeded job (the rows the service's worker writes), so the map
    finds the run's scene and layers exactly as it does for jobs run by the service."""
    from cspon_rs.api.db import make_engine, make_sessionmaker, session_scope
    from cspon_rs.store.api_crud import claim_next_job, create_job, finish_job

    engine = make_engine(db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            job = create_job(session, scene_id=scene_id, period=PERIOD, county_code=COUNTY,
                             params={**layers, "checkpoint": "reference-label"})
            claimed = claim_next_job(session)
            assert claimed is not None and claimed.id == job.id
            finish_job(session, job.id, "succeeded", result={"out_dir": str(out_dir)},
                       message="seeded by test")
            return job.id
    finally:
        engine.dispose()


def start_seeded_server(root: Path) -> Seeded:
    """Start a server in ``root`` and fill it: the Hong Kong scene registered through the API, its
    labelled change patches run through ``run_warning_pipeline`` into the server's SQLite file, the three
    highest-priority warnings assigned to a field team through the API. Stop it with ``.server.stop()``."""
    from cspon_rs.rules.pipeline import run_warning_pipeline

    config = root / "serve.yaml"
    config.write_text(f"scene_roots: ['{HONGKONG}']\nmax_photo_bytes: 2000000\n")
    server = Server(root / "cspon.db", root / "data", root / "serve.log",
                    ["--config", str(config), "--no-worker"]).start()
    try:
        bureau = add_user(server.db_url, "bureau-web", "bureau", COUNTY)
        field = add_user(server.db_url, "field-web", "field", COUNTY, team=TEAM)
        layers = {"permits_path": str(HONGKONG / "permits.gpkg"),
                  "control_lines_path": str(HONGKONG / "control_lines.gpkg"),
                  "townships_path": str(HONGKONG / "townships.gpkg")}
        with server.client(bureau) as c:
            scene = c.post("/scenes", json={
                "name": "Hong Kong", "before_path": str(HONGKONG / "before_20160927.tif"),
                "after_path": str(HONGKONG / "after_20180323.tif"), "county_code": COUNTY,
                "before_date": "2016-09-27", "after_date": "2018-03-23"})
            assert scene.status_code == 201, scene.text
            work = root / "run"
            work.mkdir()
            run = run_warning_pipeline(
                _label_patches(work), layers["permits_path"], layers["control_lines_path"], period=PERIOD,
                county_code=COUNTY, out_dir=work / "warn", db_url=server.db_url,
                townships_path=layers["townships_path"], before=HONGKONG / "before_20160927.tif",
                after=HONGKONG / "after_20180323.tif", progress=False)
            assert run.n_warnings > 0
            _record_run_as_job(server.db_url, scene.json()["id"], layers, work)
            listed = c.get("/warnings", params={"county_code": COUNTY, "period": PERIOD, "limit": 3})
            top = listed.json()["items"]
            assert len(top) == 3, top
            for w in top:
                a = c.post(f"/warnings/{w['id']}/assign",
                           json={"team": TEAM, "expected_version": w["version"]})
                assert a.status_code == 200, a.text
        return Seeded(server, bureau, field, [w["id"] for w in top])
    except BaseException:
        server.stop()
        raise
