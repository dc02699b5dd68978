"""Regenerate the bundled demo data in ``data_samples/hongkong/``.

Two parts:

1. **Imagery** (needs ``../shared/data/OSCD``): the OSCD *Hong Kong* pair (Sentinel-2 L1C, 10 m, EPSG:4326)
   stacked into one 4-band GeoTIFF per date in the order B04, B03, B02, B08 (red, green, blue, NIR), with
   band descriptions and the acquisition date in the tags. Date 2 keeps its own grid (it is 2 px smaller
   with a slightly larger pixel), exactly as upstream, so the pipeline's on-the-fly alignment is exercised.
   The OSCD change map (1 = no change, 2 = change, no georeference) becomes ``label.tif`` (0/1 uint8) on the
   date-1 grid.
2. **Planning layers** (needs only ``label.tif``): *invented* permits, control lines and townships, placed
   relative to the real labelled changes so that the demo exercises every warning category. They use the
   field codes of real bureau layers (PZWH, XMMC, YDDW, ...) and CGCS2000 CRSs: permits in EPSG:4490
   (geographic), control lines in EPSG:4526 (3-degree Gauss-Krüger zone 38, northing/easting axis order).

Run from the repository root::

    python data_samples/make_samples.py            # both parts
    python data_samples/make_samples.py --layers   # only the planning layers
    # the bundled layers were made with the shipped detector's patches kept away from the 批而不建 permit:
    python data_samples/make_samples.py --layers --detections outputs/demo/detection/change_patches.gpkg

Everything is deterministic: the same inputs give the same files.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio import features
from shapely.geometry import box, shape

HERE = Path(__file__).resolve().parent
OUT = HERE / "hongkong"
SHARED = Path(os.environ.get("CSPON_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
OSCD = SHARED / "OSCD" / "train_labelled"
CITY = "hongkong"
BANDS = ("B04", "B03", "B02", "B08")
DATE_1, DATE_2 = "2016-09-27", "2018-03-23"
COUNTY = "810000"  # GB/T 2260 code of the Hong Kong SAR, used as the demo "county"
GK = 4526  # CGCS2000 3-degree Gauss-Krüger zone 38 (central meridian 114°E), with zone prefix


def build_imagery() -> None:
    """Stack the OSCD Hong Kong bands into two 4-band GeoTIFFs and georeference the label."""
    if not OSCD.is_dir():
        raise SystemExit(f"{OSCD}: OSCD data not found; set CSPON_SHARED_DATA to the shared data folder")
    OUT.mkdir(parents=True, exist_ok=True)
    for folder, date in (("A", DATE_1), ("B", DATE_2)):
        paths = [next((OSCD / folder / CITY).glob(f"*_{band}.tif")) for band in BANDS]
        with rasterio.open(paths[0]) as ref:
            profile = ref.profile.copy()
            arrays = [ref.read(1)]
        for path in paths[1:]:
            with rasterio.open(path) as src:
                assert src.shape == arrays[0].shape and src.transform == profile["transform"], path
                arrays.append(src.read(1))
        profile.update(count=len(BANDS), driver="GTiff", compress="deflate", predictor=2, tiled=True,
                       blockxsize=256, blockysize=256, interleave="pixel")
        name = "before" if folder == "A" else "after"
        target = OUT / f"{name}_{date.replace('-', '')}.tif"
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(np.stack(arrays))
            for index, band in enumerate(BANDS, start=1):
                dst.set_band_description(index, band)
            dst.update_tags(ACQUISITION_DATE=date, SOURCE=f"OSCD {CITY} {folder}: " + ", ".join(p.name for p in paths),
                            SENSOR="Sentinel-2 MSI L1C (DN = reflectance x 10000)")
        print(f"wrote {target} ({profile['width']}x{profile['height']}, {profile['crs']})")
    with rasterio.open(next((OSCD / "A" / CITY).glob("*_B02.tif"))) as ref:
        profile = ref.profile.copy()
    with rasterio.open(OSCD / "label" / CITY / f"{CITY}-cm.tif") as src:
        raw = src.read(1)
    values = set(np.unique(raw).tolist())
    assert values <= {1, 2}, f"unexpected OSCD label values {values}"
    profile.update(dtype="uint8", count=1, compress="deflate", tiled=True, blockxsize=256, blockysize=256, nodata=None)
    with rasterio.open(OUT / "label.tif", "w", **profile) as dst:
        dst.write((raw == 2).astype("uint8"), 1)
        dst.update_tags(VALUES="0 = no change, 1 = urban change (OSCD change map, 2 -> 1)")
    print(f"wrote {OUT / 'label.tif'}")
    for credit in ("LICENSE.ChangeDetectionRepository-repo", "README.train_labels.txt"):
        if (SHARED / "OSCD" / credit).exists():
            shutil.copyfile(SHARED / "OSCD" / credit, OUT / f"OSCD-{credit}")


def _labelled_changes() -> gpd.GeoDataFrame:
    """Polygons of the labelled changes in the GK zone, largest first."""
    with rasterio.open(OUT / "label.tif") as src:
        label = src.read(1)
        polys = [shape(g) for g, _ in features.shapes(label, mask=label == 1, transform=src.transform)]
        crs = src.crs
    gdf = gpd.GeoDataFrame(geometry=polys, crs=crs).to_crs(GK)
    gdf["area"] = gdf.area
    return gdf.sort_values("area", ascending=False, ignore_index=True)


def _scene_gk() -> object:
    """The before scene's footprint in the GK zone."""
    with rasterio.open(OUT / "label.tif") as src:
        return gpd.GeoSeries([box(*src.bounds)], crs=src.crs).to_crs(GK).iloc[0]


def _unstable_land() -> gpd.GeoSeries:
    """Places a permit that must show *no* change should avoid, in the GK zone.

    Water (NDWI > 0 on either date) and every pixel whose spectral change magnitude (CVA over the four bands,
    see ``models/baselines.py``) exceeds 0.75 of its Otsu threshold: land that is stable by any detector's
    standard, not only by the (urban-only) OSCD label.
    """
    from rasterio.warp import Resampling, reproject

    from cspon_rs.models.baselines import change_magnitude, otsu_threshold

    with rasterio.open(OUT / f"before_{DATE_1.replace('-', '')}.tif") as src_a:
        a = src_a.read().astype("float32")
        transform, crs = src_a.transform, src_a.crs
        with rasterio.open(OUT / f"after_{DATE_2.replace('-', '')}.tif") as src_b:
            b = np.zeros_like(a)
            reproject(src_b.read().astype("float32"), b, src_transform=src_b.transform, src_crs=src_b.crs,
                      dst_transform=transform, dst_crs=crs, resampling=Resampling.bilinear)
    magnitude = change_magnitude(a, b)
    unstable = magnitude > 0.75 * otsu_threshold(magnitude)
    for img in (a, b):  # bands B04, B03, B02, B08: NDWI = (green - NIR) / (green + NIR)
        unstable |= (img[1] - img[3]) / np.maximum(img[1] + img[3], 1.0) > 0.0
    shapes = [shape(g) for g, _ in features.shapes(unstable.astype("uint8"), mask=unstable, transform=transform)]
    return gpd.GeoSeries(shapes, crs=crs).to_crs(GK)


def _square(x: float, y: float, size: float) -> object:
    return box(x - size / 2, y - size / 2, x + size / 2, y + size / 2)


def _spot_near(changes: gpd.GeoDataFrame, unstable: gpd.GeoSeries, target: int, size: float) -> object:
    """A stable-land square whose nearest labelled change is ``changes[target]``, 100-400 m away.

    Among the candidates the one with the largest margin between the distance to the next-nearest change and
    the distance to the target is taken, so the 批东建西 rule pairs this permit with the intended patch.
    """
    scene = _scene_gk().buffer(-50.0)  # type: ignore[attr-defined]
    geoms = changes.geometry
    centre = geoms.iloc[target].centroid
    best, best_margin = None, -np.inf
    for radius in range(150, 700, 25):
        for angle in np.arange(0.0, 360.0, 10.0):
            x = centre.x + radius * np.cos(np.radians(angle))
            y = centre.y + radius * np.sin(np.radians(angle))
            candidate = _square(x, y, size)
            if not scene.contains(candidate):
                continue
            distances = geoms.distance(candidate)
            if distances.min() < 60.0 or not 100.0 <= distances.iloc[target] <= 400.0:
                continue
            if unstable.intersects(candidate.buffer(20.0)).any():
                continue
            margin = distances.drop(index=target).min() - distances.iloc[target]
            if margin > best_margin:
                best, best_margin = candidate, margin
    if best is None or best_margin < 50.0:
        raise RuntimeError(f"no spot near change {target} that is clearly nearer to it than to other changes")
    return best


def _spot_far(changes: gpd.GeoDataFrame, unstable: gpd.GeoSeries, size: float) -> object:
    """The stable-land square of edge ``size`` m farthest from every labelled change."""
    scene = _scene_gk().buffer(-80.0)  # type: ignore[attr-defined]
    minx, miny, maxx, maxy = scene.bounds
    best, best_distance = None, -1.0
    for x in np.arange(minx + size, maxx - size, 50.0):
        for y in np.arange(miny + size, maxy - size, 50.0):
            candidate = _square(float(x), float(y), size)
            if scene.contains(candidate) and not unstable.intersects(candidate.buffer(20.0)).any():
                distance = float(changes.geometry.distance(candidate).min())
                if distance > best_distance:
                    best, best_distance = candidate, distance
    assert best is not None
    return best


def build_layers(detections: Path | None = None) -> None:
    """Write permits.gpkg, control_lines.gpkg and townships.gpkg around the labelled changes.

    Args:
        detections: Optional ``change_patches.gpkg`` of a detector run; the 批而不建 permit is then also kept
            as far as possible from those patches (a permit near any unpermitted change is read as 批东建西).
    """
    changes = _labelled_changes()
    g = changes.geometry
    # Targets: the labelled changes by size rank, each given one scenario.
    legal, exceed, pending, late, _elsewhere, farmland, redline, outside = (g.iloc[i] for i in range(8))
    # 少批多建: the permit covers the western ~45 % of the change's bounding box only.
    minx, miny, maxx, maxy = exceed.bounds
    exceed_permit = box(minx - 15, miny - 15, minx + 0.45 * (maxx - minx), maxy + 15)
    unstable = _unstable_land()
    unstable = unstable[unstable.area > 0]
    moved = _spot_near(changes, unstable, 4, 90.0)
    avoid = changes
    if detections is not None:
        detected = gpd.read_file(detections, layer="change_patches").to_crs(GK)
        avoid = gpd.GeoDataFrame(geometry=pd.concat([changes.geometry, detected.geometry], ignore_index=True), crs=GK)
    idle = _spot_far(avoid, unstable, 120.0)

    rows = [
        # PZWH, LX, XMMC, YDDW, PZRQ, YXQZ, PZMJ(computed), ZT, geometry
        ("港规许〔2015〕017号", "建设用地规划许可", "将军澳物流园一期", "港东建设有限公司", "2015-11-20", "2020-11-20",
         "已批", legal.buffer(60.0)),
        ("港农转〔2016〕041号", "农转用", "东涌配套住宅", "大屿山置业有限公司", "2016-05-10", "2021-05-10",
         "已批", exceed_permit),
        ("港供地〔2018〕003号", "供地", "观塘商业综合体", "九龙城建集团", "", "",
         "待批", pending.buffer(25.0)),
        ("港规许〔2018〕022号", "建设工程规划许可", "沙田数据中心", "新界科技有限公司", "2018-06-15", "2023-06-15",
         "已批", late.buffer(25.0)),
        ("港供地〔2017〕009号", "供地", "西贡仓储中心", "西贡物流有限公司", "2017-03-02", "2022-03-02",
         "已批", moved),
        ("港农转〔2015〕005号", "农转用", "屯门工业园二期", "屯门工业发展公司", "2015-08-18", "2020-08-18",
         "已批", idle),
    ]
    permits = gpd.GeoDataFrame(
        {
            "PZWH": [r[0] for r in rows],
            "LX": [r[1] for r in rows],
            "XMMC": [r[2] for r in rows],
            "YDDW": [r[3] for r in rows],
            "PZRQ": [r[4] or None for r in rows],
            "YXQZ": [r[5] or None for r in rows],
            "ZT": [r[6] for r in rows],
        },
        geometry=[r[7] for r in rows],
        crs=GK,
    )
    permits["PZMJ"] = permits.area.round(1)
    # The 批东建西 change is built by the applicant of the moved permit (same project name): record the
    # change's location nowhere -- the engine must find the nearby permit of the same applicant itself.
    permits["XZQDM"] = COUNTY
    permits = permits.to_crs(4490)

    scene = _scene_gk()
    # 永久基本农田 overlapping ~half of one change; 生态保护红线 overlapping part of another;
    # 城镇开发边界 covering the scene except a hole around a third change.
    fx0, fy0, fx1, fy1 = farmland.bounds
    yjjbnt = box(fx0 - 200, fy0 - 200, (fx0 + fx1) / 2, fy1 + 200)
    rx0, ry0, rx1, ry1 = redline.bounds
    stbhhx = box((rx0 + rx1) / 2, ry0 - 300, rx1 + 300, ry1 + 300)
    czkfbj = scene.buffer(-30.0).difference(outside.buffer(250.0))
    control = {
        "YJJBNT": yjjbnt,
        "STBHHX": stbhhx,
        "CZKFBJ": czkfbj,
    }
    path = OUT / "control_lines.gpkg"
    path.unlink(missing_ok=True)
    for code, geom in control.items():
        layer = gpd.GeoDataFrame(
            {"KZXLX": [code], "XZQDM": [COUNTY], "VERSION": ["2017版"], "VALID_FROM": ["2017-01-01"]},
            geometry=[geom], crs=GK,
        )
        layer.to_file(path, layer=code, driver="GPKG", engine="pyogrio")

    minx, miny, maxx, maxy = scene.bounds
    midx, midy = (minx + maxx) / 2, (miny + maxy) / 2
    townships = gpd.GeoDataFrame(
        {
            "XZQDM": [f"{COUNTY}001", f"{COUNTY}002", f"{COUNTY}003", f"{COUNTY}004"],
            "XZQMC": ["西北街道", "东北街道", "西南街道", "东南街道"],
        },
        geometry=[box(minx, midy, midx, maxy), box(midx, midy, maxx, maxy),
                  box(minx, miny, midx, midy), box(midx, miny, maxx, midy)],
        crs=GK,
    ).to_crs(4490)

    for name, frame, layer in (("permits", permits, "permits"), ("townships", townships, "townships")):
        target = OUT / f"{name}.gpkg"
        target.unlink(missing_ok=True)
        frame.to_file(target, layer=layer, driver="GPKG", engine="pyogrio")
    scenario = pd.DataFrame(
        {
            "label_rank": list(range(8)),
            "area_m2": changes["area"].iloc[:8].round(0).to_list(),
            "scenario": ["legal (fully permitted)", "少批多建 exceeding approval", "边批边建 pending permit",
                         "未批先建 confirmed late (permit after t2)", "批东建西 (permit 100-400 m away)",
                         "未批先建 + 永久基本农田 YJJBNT", "未批先建 + 生态保护红线 STBHHX",
                         "未批先建 + outside 城镇开发边界 CZKFBJ"],
        }
    )
    scenario.to_csv(OUT / "scenarios.csv", index=False, encoding="utf-8-sig")
    print(f"wrote permits ({len(permits)}), control lines ({len(control)} layers), townships ({len(townships)})")
    print(scenario.to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", action="store_true", help="only regenerate the planning layers")
    parser.add_argument("--detections", type=Path, default=None,
                        help="change_patches.gpkg of a detector run to keep the 批而不建 permit away from")
    args = parser.parse_args()
    if not args.layers:
        build_imagery()
    build_layers(args.detections)


if __name__ == "__main__":
    main()
