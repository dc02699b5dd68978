"""Speed of the warning engine: classify N synthetic patches against M permits, save them, export lists.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_warnings.py [n_patches] [n_permits]``; prints seconds.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np

from cspon_rs.exports.lists import write_warning_csv, write_warning_gpkg, write_warning_xlsx
from cspon_rs.rules.engine import classify
from cspon_rs.rules.synthetic import LocalFrame, patches_frame
from cspon_rs.store.crud import save_warnings
from cspon_rs.store.db import open_store, sqlite_url


def main(n_patches: int = 2000, n_permits: int = 1000) -> None:
    rng = np.random.default_rng(0)
    grid = LocalFrame((114.0, 22.3), 4526)
    side = 30_000.0
    xy = rng.uniform(0, side, size=(n_patches, 2))
    wh = rng.uniform(20, 200, size=(n_patches, 2))
    patches = patches_frame([grid.rect(x, y, w, h) for (x, y), (w, h) in zip(xy, wh, strict=True)], grid.crs)
    pxy = np.vstack([xy[: n_permits // 2] - 10, rng.uniform(0, side, size=(n_permits - n_permits // 2, 2))])
    permits = gpd.GeoDataFrame(
        {"permit_no": [f"P{i}" for i in range(n_permits)], "permit_type": "land_supply", "project": None,
         "applicant": None, "approved_on": [np.datetime64("2023-01-01").astype(object)] * n_permits,
         "expires_on": None, "status": "approved"},
        geometry=[grid.rect(x, y, 150, 150) for x, y in pxy], crs=grid.crs,
    )
    control = gpd.GeoDataFrame({"kind": ["YJJBNT", "STBHHX", "CZKFBJ"], "valid_from": [None] * 3},
                               geometry=[grid.rect(0, 0, 10000, 10000), grid.rect(20000, 20000, 5000, 5000),
                                         grid.rect(0, 0, 25000, 25000)], crs=grid.crs)
    t = time.perf_counter()
    warnings = classify(patches, permits, control, t1="2025-03-01", t2="2025-09-01")
    t_classify = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        sessions = open_store(sqlite_url(Path(tmp) / "w.sqlite"))
        with sessions() as session:
            t = time.perf_counter()
            result = save_warnings(session, warnings, period="2025Q3", county_code="510000", patches=patches)
            t_save = time.perf_counter() - t
            t = time.perf_counter()
            save_warnings(session, warnings, period="2025Q3", county_code="510000", patches=patches)
            t_resave = time.perf_counter() - t
        warnings["warning_id"] = [result.ids[k] for k in warnings["source_key"]]
        t = time.perf_counter()
        write_warning_xlsx(warnings, Path(tmp) / "l.xlsx")
        write_warning_csv(warnings, Path(tmp) / "l.csv")
        write_warning_gpkg(warnings, Path(tmp) / "l.gpkg")
        t_export = time.perf_counter() - t
    counts = warnings["category"].value_counts().to_dict()
    print(f"{n_patches} patches x {n_permits} permits: classify {t_classify:.2f} s "
          f"({1000 * t_classify / n_patches:.2f} ms/patch), save {t_save:.2f} s, idempotent re-save "
          f"{t_resave:.2f} s, XLSX+CSV+GPKG {t_export:.2f} s")
    print(f"categories: {counts}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
