"""Helpers of the API tests: a real ``cspon-rs serve`` subprocess on a free loopback port, a real SQLite
file in a temp folder, users created through the real CRUD, small seeded GeoTIFFs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from serve_support import Server, add_user, free_port  # noqa: F401 - re-exported for the tests

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CSPON_SHARED_DATA", REPO / ".." / "shared" / "data"))
HONGKONG = REPO / "data_samples" / "hongkong"
PYTHON = sys.executable


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
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=bands,
        dtype="uint16",
        crs="EPSG:4326",
        transform=from_origin(114.10, 22.40, 0.0001, 0.0001),
    ) as dst:
        dst.write(data)
    return path


def seed_warnings(
    db_url: str, county: str, period: str, n: int, *, lon0: float = 114.10, lat0: float = 22.30, seed: int = 0
) -> list[str]:
    """Store ``n`` warnings for one county/period through the store's real ``save_warnings``; returns ids."""
    import geopandas as gpd
    from shapely.geometry import box

    from cspon_rs.api.db import ensure_schema, make_engine, make_sessionmaker, session_scope
    from cspon_rs.store.crud import save_warnings

    rng = np.random.default_rng(seed)
    cats = ["未批先建", "少批多建", "批东建西", "边批边建"]
    rows = []
    for i in range(n):
        x, y = lon0 + 0.003 * i, lat0 + 0.002 * (i % 3)
        area = float(rng.uniform(300, 5000))
        rows.append(
            {
                "source_key": f"p{i:04d}",
                "patch_id": f"p{i:04d}",
                "category": cats[i % len(cats)],
                "is_warning": True,
                "flags": [],
                "area_m2": area,
                "priority": float(rng.uniform(0, 100)),
                "rank": i + 1,
                "confidence": 0.8,
                "township_code": f"{county}{i % 2:03d}",
                "township_name": f"T{i % 2}",
                "reasons": [{"code": "no_permit", "zh": "无批文", "en": "no permit"}],
                "permits": [],
                "rule_set_version": "test",
                "t1": "2016-09-27",
                "t2": "2018-03-23",
                "geometry": box(x, y, x + 0.0005, y + 0.0005),
            }
        )
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)
    ensure_schema(db_url)
    engine = make_engine(db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            result = save_warnings(session, frame, period=period, county_code=county)
    finally:
        engine.dispose()
    return [result.ids[r["source_key"]] for r in rows]


def jpeg_bytes(size: int = 32, seed: int = 0) -> bytes:
    """A real small JPEG."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()
