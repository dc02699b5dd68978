"""Seed a county warning store with N plausible warnings (default 10,000) for the report and map benchmarks.

The warnings lie on the bundled Hong Kong scene pair (``data_samples/hongkong``), so the review map draws
them over real imagery and chips can be cut for them:

* polygons: rotated rectangles and irregular 5-9-gons of 150 m² .. 25,000 m² (log-uniform), built in the
  CGCS2000 3° Gauss-Krüger zone of the scene (EPSG:4526) and stored in EPSG:4326, all inside the scene;
* categories weighted as a real list (未批先建 most), control-line flags with their overlap areas,
  bilingual reasons, a permit number on the covered categories;
* townships from ``townships.gpkg`` (the one containing the centroid), priorities and ranks;
* statuses: 70 % new, 15 % assigned to one of five teams (some overdue), 10 % verified (with a
  verification row: illegal / legal / false change, actual use), 5 % closed; history events match the
  version (``version`` = number of events);
* one raw patch per warning naming the scene files by absolute path and sha256 (how the map and the
  chips find the imagery), and optionally ``--photos K`` field photos (JPEG, 4000 x 3000 px by default)
  on each of the ``--photo-warnings`` highest-priority verified warnings, written under ``--data-dir``.

Usage::

    python benchmarks/seed_county.py --db sqlite:///county.sqlite --n 10000
    python benchmarks/seed_county.py --db postgresql+psycopg://u:pw@localhost/cspon --n 10000 \\
        --data-dir cspon-data --photos 3 --photo-warnings 50

The generator is deterministic for a ``--seed``; it refuses to add to a county/period that already has
warnings (use another ``--period`` or a fresh database).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HONGKONG = REPO / "data_samples" / "hongkong"
BEFORE = HONGKONG / "before_20160927.tif"
AFTER = HONGKONG / "after_20180323.tif"

#: (code, weight, reason zh, reason en)
CATEGORIES: list[tuple[str, float, str, str]] = [
    ("built_before_approval", 0.70, "新增建设未见有效批准手续", "new construction without a valid approval"),
    ("exceeding_approval", 0.10, "建设范围超出批准范围", "construction exceeds the approved area"),
    ("building_while_pending", 0.07, "批准手续在建设期间办理", "approval pending while building"),
    ("built_elsewhere", 0.06, "附近批准地块未建设, 此处建设", "approved plot nearby unbuilt, built here"),
    ("approved_not_built", 0.04, "批准超过两年未建设", "approved more than two years ago, not built"),
    ("none", 0.03, "批准范围内建设", "covered by a valid approval"),
]
TEAMS = ["一队", "二队", "三队", "四队", "五队"]
USES = ["厂房", "住宅", "仓储", "道路", "农业设施", "临时用地", "停车场"]


@dataclass
class SeedResult:
    """What was written."""

    warnings: int
    patches: int
    photos: int
    seconds: float


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _polygon(rng: np.random.Generator, cx: float, cy: float, area: float) -> Any:
    """A rotated rectangle or an irregular polygon of about ``area`` m² around (cx, cy) in metres."""
    from shapely import affinity
    from shapely.geometry import Polygon, box

    if rng.random() < 0.6:
        ratio = rng.uniform(0.4, 1.0)
        w = math.sqrt(area / ratio)
        shape = box(cx - w / 2, cy - w * ratio / 2, cx + w / 2, cy + w * ratio / 2)
        return affinity.rotate(shape, rng.uniform(0, 90), origin="centroid")
    k = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * math.pi, k))
    radii = rng.uniform(0.6, 1.0, k)
    poly = Polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii, strict=True)])
    poly = poly.buffer(0)
    scale = math.sqrt(area / max(poly.area, 1e-9))
    return affinity.scale(poly, scale, scale, origin=(cx, cy))


def seed_county(
    db_url: str,
    *,
    n: int = 10_000,
    county_code: str = "810000",
    period: str = "2018Q1",
    seed: int = 0,
    data_dir: Path | None = None,
    photos: int = 0,
    photo_warnings: int = 50,
    photo_size: tuple[int, int] = (4000, 3000),
) -> SeedResult:
    """Write ``n`` warnings of ``county_code``/``period`` (plus patches, history, verifications, photos).

    Args:
        db_url: SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``); migrated to the newest
            revision first.
        n: Number of warnings (legal rows included, about 3 %).
        county_code, period: Keys of the seeded rows.
        seed: Random seed (same seed, same store).
        data_dir: Service data directory for the photo files (needed when ``photos`` > 0).
        photos: Photos per photographed warning (JPEG, ``photo_size`` px).
        photo_warnings: How many of the highest-priority verified warnings get photos.
        photo_size: Width, height of each photo in pixels.

    Raises:
        ValueError: The county/period already has warnings, or photos without a data directory.
    """
    import geopandas as gpd
    import rasterio
    import shapely
    from pyproj import Transformer
    from shapely.geometry import Point
    from sqlalchemy import func, insert, select

    from cspon_rs.store.api_models import Photo
    from cspon_rs.store.db import open_store
    from cspon_rs.store.models import Patch, Verification, WarningHistory, WarningRecord

    if photos and data_dir is None:
        raise ValueError("--photos needs --data-dir (the service's data directory)")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    factory = open_store(db_url)
    with factory() as session:
        existing = session.scalar(select(func.count()).select_from(WarningRecord).where(
            WarningRecord.period == period, WarningRecord.county_code == county_code))
        if existing:
            raise ValueError(f"{db_url}: county {county_code} period {period} already has {existing} warnings; "
                             "seed another period or a fresh database")
    to_gk = Transformer.from_crs(4326, 4526, always_xy=True)
    to_ll = Transformer.from_crs(4526, 4326, always_xy=True)
    with rasterio.open(BEFORE) as src:
        left, bottom, right, top = src.bounds  # EPSG:4326
    (x0, x1), (y0, y1) = to_gk.transform([left, right], [bottom, top])
    margin = 120.0
    towns = gpd.read_file(HONGKONG / "townships.gpkg").to_crs(4326)
    sha_before, sha_after = _sha256(BEFORE), _sha256(AFTER)
    codes = [c[0] for c in CATEGORIES]
    weights = np.array([c[1] for c in CATEGORIES])
    reason = {c[0]: (c[2], c[3]) for c in CATEGORIES}
    cats = rng.choice(len(codes), size=n, p=weights / weights.sum())
    areas = np.exp(rng.uniform(math.log(150), math.log(25_000), n))
    xs = rng.uniform(x0 + margin, x1 - margin, n)
    ys = rng.uniform(y0 + margin, y1 - margin, n)
    conf = rng.uniform(0.5, 0.99, n)
    now = dt.datetime.now(dt.UTC)
    t1, t2 = dt.date(2016, 9, 27), dt.date(2018, 3, 23)
    rows: list[dict[str, Any]] = []
    for k in range(n):
        geom_gk = _polygon(rng, float(xs[k]), float(ys[k]), float(areas[k]))
        geom = shapely.transform(geom_gk, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
        category = codes[int(cats[k])]
        flags: list[str] = []
        farmland = redline = outside = 0.0
        if rng.random() < 0.08:
            flags.append("YJJBNT")
            farmland = float(geom_gk.area * rng.uniform(0.1, 1.0))
        if rng.random() < 0.04:
            flags.append("STBHHX")
            redline = float(geom_gk.area * rng.uniform(0.1, 1.0))
        if rng.random() < 0.06:
            flags.append("CZKFBJ")
            outside = float(geom_gk.area * rng.uniform(0.1, 1.0))
        area = float(geom_gk.area)
        priority = round(area / 100.0 * (1 + 2 * len(flags)) * float(conf[k]), 2)
        point = geom.representative_point()
        minx, miny, maxx, maxy = geom.bounds
        zh, en = reason[category]
        permit = f"HK-PZ-{k:05d}" if category in ("exceeding_approval", "building_while_pending", "none",
                                                  "approved_not_built") else None
        rows.append({
            "id": f"{county_code}-{period}-{k + 1:04d}", "period": period, "county_code": county_code,
            "seq": k + 1, "source_key": f"seed-{k + 1}", "patch_id": f"seed-{k + 1}",
            "township_code": None, "township_name": None, "category": category,
            "is_warning": category != "none", "flags": flags, "area_m2": area, "area_mu": area / 666.667,
            "covered_m2": area * 0.6 if permit else 0.0, "excess_m2": area * 0.4 if category ==
            "exceeding_approval" else 0.0, "farmland_overlap_m2": farmland, "redline_overlap_m2": redline,
            "outside_urban_m2": outside,
            "reasons": [{"code": category, "zh": zh, "en": en}]
            + [{"code": f, "zh": {"YJJBNT": "占用永久基本农田", "STBHHX": "占用生态保护红线",
                                  "CZKFBJ": "城镇开发边界外建设"}[f], "en": f"overlaps {f}"} for f in flags],
            "permits": [{"permit_no": permit, "role": "covering", "status": "approved",
                         "approved_on": "2015-06-01", "overlap_share": 0.6}] if permit else [],
            "priority": priority, "rank": None, "confidence": float(conf[k]), "status": "new",
            "verification_result": None, "assigned_team": None, "due_date": None,
            "rule_set_version": "seed-1", "t1": t1, "t2": t2, "geometry_wkt": geom.wkt,
            "minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy,
            "centroid_lon": point.x, "centroid_lat": point.y, "linked_ids": [], "seen_periods": [],
            "detector": "seed-county", "created_at": now, "updated_at": now, "version": 1,
        })
    # townships by centroid
    pts = gpd.GeoDataFrame(geometry=[Point(r["centroid_lon"], r["centroid_lat"]) for r in rows], crs=4326)
    joined = gpd.sjoin(pts, towns, how="left", predicate="within")
    joined = joined[~joined.index.duplicated()]
    for k, (code, name) in enumerate(zip(joined["XZQDM"], joined["XZQMC"], strict=True)):
        if isinstance(code, str):
            rows[k]["township_code"], rows[k]["township_name"] = code, name
    # ranks among warnings
    order = sorted((r for r in rows if r["is_warning"]), key=lambda r: -r["priority"])
    for i, r in enumerate(order, 1):
        r["rank"] = i
    history: list[dict[str, Any]] = []

    def event(warning_id: str, name: str, by: str, to: str, frm: str | None = None, why: str | None = None,
              details: dict[str, Any] | None = None) -> None:
        history.append({"warning_id": warning_id, "event": name, "at": now, "by": by, "from_status": frm,
                        "to_status": to, "why": why, "details": details})

    verifications: list[dict[str, Any]] = []
    for r in rows:
        event(r["id"], "created", "seed", "new", details={"seed": True})
        if not r["is_warning"]:
            continue
        u = rng.random()
        if u < 0.70:
            continue
        team = TEAMS[int(rng.integers(len(TEAMS)))]
        due = t2 + dt.timedelta(days=int(rng.integers(30, 400)))
        r.update(status="assigned", assigned_team=team, due_date=due, version=2)
        event(r["id"], "assigned", "bureau", "assigned", "new", details={"team": team})
        if u < 0.85:
            continue
        result = str(rng.choice(["illegal", "legal", "false_change"], p=[0.6, 0.25, 0.15]))
        r.update(status="verified", verification_result=result, version=3)
        verifications.append({"warning_id": r["id"], "result": result, "actual_use": str(rng.choice(USES)),
                              "notes": "seeded field check", "lon": r["centroid_lon"], "lat": r["centroid_lat"],
                              "observed_at": now, "by": team, "created_at": now})
        event(r["id"], "verified", team, "verified", "assigned", details={"result": result})
        if u < 0.95:
            continue
        r.update(status="closed", version=4)
        event(r["id"], "status", "bureau", "closed", "verified", why="seeded")
    patches = [{
        "period": period, "county_code": county_code, "patch_id": r["patch_id"], "warning_id": r["id"],
        "area_m2": r["area_m2"], "prob_mean": r["confidence"], "prob_max": min(1.0, r["confidence"] + 0.05),
        "t1": t1, "t2": t2, "scene_before": str(BEFORE), "scene_after": str(AFTER),
        "scene_before_sha256": sha_before, "scene_after_sha256": sha_after, "detector": "seed-county",
        "geometry_wkt": r["geometry_wkt"], "created_at": now,
    } for r in rows]
    n_photos = 0
    with factory() as session:
        for table, values in ((WarningRecord, rows), (WarningHistory, history), (Patch, patches)):
            for i in range(0, len(values), 2000):
                session.execute(insert(table.__table__), values[i:i + 2000])  # type: ignore[attr-defined]
        vids: dict[str, int] = {}
        for v in verifications:
            obj = Verification(**v)
            session.add(obj)
            session.flush()
            vids[v["warning_id"]] = obj.id
        if photos:
            assert data_dir is not None
            photographed = [r for r in order if r["id"] in vids][:photo_warnings]
            n_photos = _write_photos(session, Photo, Path(data_dir), photographed, vids, photos, photo_size, rng)
        session.commit()
    factory.kw["bind"].dispose()
    return SeedResult(len(rows), len(patches), n_photos, time.perf_counter() - started)


def _write_photos(session: Any, photo_model: Any, data_dir: Path, rows: list[dict[str, Any]], vids: dict[str, int],
                  per_warning: int, size: tuple[int, int], rng: np.random.Generator) -> int:
    """One JPEG per photo (a noisy gradient, so it compresses like a camera picture) and its row."""
    from PIL import Image

    w, h = size
    yy, xx = np.mgrid[0:h:8, 0:w:8]
    base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 127 // (w + h))], axis=-1).astype(np.uint8)
    written = 0
    for r in rows:
        folder = data_dir / "photos" / r["id"]
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_warning):
            small = np.clip(base.astype(np.int16) + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
            image = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
            path = folder / f"seed_{j}.jpg"
            image.save(path, format="JPEG", quality=88)
            data = path.read_bytes()
            session.add(photo_model(
                warning_id=r["id"], verification_id=vids[r["id"]],
                path=str(path.resolve().relative_to(data_dir.resolve())), content_type="image/jpeg",
                size=len(data), sha256=hashlib.sha256(data).hexdigest(), original_name=path.name))
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/seed_county.py --db URL [--n 10000] ...``"""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, help="sqlite:///file.sqlite or postgresql+psycopg://...")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--county", default="810000")
    ap.add_argument("--period", default="2018Q1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=None, help="service data directory (for --photos)")
    ap.add_argument("--photos", type=int, default=0, help="photos per photographed warning")
    ap.add_argument("--photo-warnings", type=int, default=50)
    args = ap.parse_args(argv)
    try:
        res = seed_county(args.db, n=args.n, county_code=args.county, period=args.period, seed=args.seed,
                          data_dir=args.data_dir, photos=args.photos, photo_warnings=args.photo_warnings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"seeded {res.warnings} warnings, {res.patches} patches, {res.photos} photos "
          f"for {args.county} {args.period} in {res.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
