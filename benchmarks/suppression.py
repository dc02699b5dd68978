"""Measure the false-alarm suppression step (``cspon_rs.inference.suppress``) cue by cue.

(i) OSCD Sentinel-2 cities with labels (default: the checkpoint card's test cities, hongkong + saclay_e):
the checkpoint predicts the whole image (as ``cspon-rs evaluate`` does), the card threshold makes the mask,
the mask becomes patches exactly as ``cspon-rs detect`` makes them (``vectorize_mask``: 4-connected,
``min_area_m2`` 200, simplified by 1 m), and the cues are applied one after the other (mmu, vegetation,
water, shape). For each step: patches kept, patches removed that touch no labelled change (false alarms
removed), removed that touch labelled change (true change lost), warning precision (share of kept patches
touching labelled change) and labelled-object recall (8-connected labelled components touched by a kept
patch) after the step.

(ii) NAIP-multidate (10 dates of one North-Dakota farmland place, almost nothing built): for consecutive
date pairs (``--quick``: three of them; ``--all-pairs``: all 45) patches per km² of valid area before and
after each step, mean and max over pairs. Nearly every patch there is a false alarm.

``--select`` sweeps each cue's threshold on top of the cues already picked and picks the one with the best
``false alarms removed - cost x true change lost`` (``--cost``, 4): run it on validation cities
(``--cities rennes`` or the training cities) to pick thresholds, never on the test cities or NAIP.

NAIP input is scored twice by default (``--naip-scale raw,match``): raw uint8 as ``cspon-rs detect`` would
feed it, and linearly matched to the card's normalisation statistics (a stress test for a model trained on
other units).

Usage (from the repository root, about 1 minute on 2 CPU threads; ``--all-pairs`` about 8)::

    PYTHONPATH=. .venv/bin/python benchmarks/suppression.py [--checkpoint default] [--config configs/detect.yaml]
        [--cities hongkong,saclay_e] [--quick | --all-pairs] [--no-naip] [--select] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import torch
from rasterio.features import rasterize
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cspon_rs.geo.raster import aligned_pair  # noqa: E402
from cspon_rs.inference.config import DetectConfig  # noqa: E402
from cspon_rs.inference.outputs import MASK_NODATA, PROB_NODATA  # noqa: E402
from cspon_rs.inference.suppress import (  # noqa: E402
    CUE_ORDER,
    BandRoles,
    SuppressConfig,
    band_roles,
    mmu_cue,
    patch_evidence,
    shape_cue,
    vegetation_cue,
    water_cue,
)
from cspon_rs.inference.vectorize import PatchAttributes, vectorize_mask  # noqa: E402
from cspon_rs.models.checkpoint import load_checkpoint, resolve_checkpoint  # noqa: E402
from cspon_rs.training.datasets import ChangePair, load_oscd  # noqa: E402
from cspon_rs.training.evaluate import model_proba  # noqa: E402

MIN_AREA_M2 = 200.0  # cspon-rs detect's default --min-area
SIMPLIFY_M = 1.0  # cspon-rs detect's default --simplify
QUICK_PAIRS = 3


# --------------------------------------------------------------------------------------------------------
# Patches of one pair
# --------------------------------------------------------------------------------------------------------


@dataclass
class PairPatches:
    """The detector's patches of one pair with their evidence, and (when labelled) what they touch."""

    name: str
    patches: gpd.GeoDataFrame
    evidence: Any  # pandas DataFrame
    area_km2: float
    touches: list[set[int]] = field(default_factory=list)  # labelled components each patch touches
    n_objects: int = 0


def _write(path: Path, data: np.ndarray, crs: Any, transform: Any, nodata: float | None,
           descriptions: list[str] | None = None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[-1], height=data.shape[-2],
                       count=1 if data.ndim == 2 else data.shape[0], dtype=data.dtype.name, crs=crs,
                       transform=transform, nodata=nodata, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(data if data.ndim == 3 else data[None])
        if descriptions:
            dst.descriptions = tuple(descriptions)
    return path


def make_patches(
    name: str, prob: np.ndarray, valid: np.ndarray, threshold: float, crs: Any, transform: Any,
    before: Path, after: Path, bands: list[str], roles: BandRoles, tmp: Path,
) -> PairPatches:
    """Threshold ``prob``, vectorise like ``cspon-rs detect`` and compute every cue's evidence."""
    prob_path = _write(tmp / f"{name}_prob.tif", np.where(valid, prob, PROB_NODATA).astype("float32"), crs,
                       transform, PROB_NODATA)
    mask = np.where(valid, (prob >= threshold).astype("uint8"), np.uint8(MASK_NODATA)).astype("uint8")
    mask_path = _write(tmp / f"{name}_mask.tif", mask, crs, transform, MASK_NODATA)
    attrs = PatchAttributes(t1=None, t2=None, scene_before=before.name, scene_after=after.name, detector="bench")
    patches = vectorize_mask(mask_path, prob_path, attrs, min_area_m2=MIN_AREA_M2, simplify_m=SIMPLIFY_M)
    evidence = patch_evidence(patches, before, after, roles)
    px_km2 = abs(transform.a * transform.e - transform.b * transform.d) / 1e6
    return PairPatches(name, patches, evidence, float(valid.sum()) * px_km2)


def label_touches(pp: PairPatches, label: np.ndarray, valid: np.ndarray, transform: Any) -> None:
    """Fill ``pp.touches`` / ``pp.n_objects`` from a 0/1 label (8-connected components, as the evaluator)."""
    comps, n = ndimage.label((label == 1) & valid, structure=np.ones((3, 3), dtype=bool))
    pp.n_objects = int(n)
    pp.touches = [set() for _ in range(len(pp.patches))]
    if not len(pp.patches):
        return
    ids = rasterize([(g, k + 1) for k, g in enumerate(pp.patches.geometry)], out_shape=label.shape,
                    transform=transform, fill=0, dtype="int32")
    m = (ids > 0) & (comps > 0)
    for pid, comp in set(zip(ids[m].tolist(), comps[m].tolist(), strict=True)):
        pp.touches[pid - 1].add(int(comp))


# --------------------------------------------------------------------------------------------------------
# Cues
# --------------------------------------------------------------------------------------------------------


def cue_fires(ev: Any, cue: str, cfg: SuppressConfig, roles: BandRoles, value: float | None = None) -> np.ndarray:
    """Boolean array: does ``cue`` (at its configured threshold, or ``value``) flag each patch."""
    n = len(ev)
    if cue == "mmu":
        return mmu_cue(ev["area_m2"].to_numpy(), cfg.mmu.resolved(10.0) if value is None else value)[0]
    if cue == "vegetation":
        if not roles.has_ndvi:
            return np.zeros(n, dtype=bool)
        thr = cfg.vegetation.ndvi_after_min if value is None else value
        return vegetation_cue(ev["ndvi_t2"].to_numpy(), ev["ndvi_t1"].to_numpy(), thr,
                              cfg.vegetation.ndvi_gain_min if value is None else None)[0]
    if cue == "vegetation_gain":
        if not roles.has_ndvi or value is None:
            return np.zeros(n, dtype=bool)
        return vegetation_cue(ev["ndvi_t2"].to_numpy(), ev["ndvi_t1"].to_numpy(), 2.0, value)[0]
    if cue == "water":
        if not roles.has_ndwi:
            return np.zeros(n, dtype=bool)
        return water_cue(ev["ndwi_t2"].to_numpy(), cfg.water.ndwi_after_min if value is None else value)[0]
    if cue == "shape":
        return shape_cue(ev["width_m"].to_numpy(), cfg.shape.min_width_m if value is None else value)[0]
    raise ValueError(cue)


def labelled_step(pairs: list[PairPatches], removed: list[np.ndarray], before: list[np.ndarray]) -> dict[str, Any]:
    """Figures after one step: ``removed`` = suppressed so far, ``before`` = suppressed before this step."""
    kept = fa_removed = tp_lost = hits = 0
    objects = objects_hit = 0
    for pp, rem, prev in zip(pairs, removed, before, strict=True):
        real = np.array([bool(t) for t in pp.touches], dtype=bool)
        step = rem & ~prev
        kept += int((~rem).sum())
        hits += int((~rem & real).sum())
        fa_removed += int((step & ~real).sum())
        tp_lost += int((step & real).sum())
        objects += pp.n_objects
        found: set[int] = set()
        for k in np.flatnonzero(~rem):
            found |= pp.touches[k]
        objects_hit += len(found)
    return {
        "kept": kept, "false_alarms_removed": fa_removed, "true_change_lost": tp_lost,
        "warning_precision": hits / kept if kept else float("nan"),
        "object_recall": objects_hit / objects if objects else float("nan"),
        "objects_hit": objects_hit, "objects": objects,
    }


def cumulative(pairs: list[PairPatches], cfg: SuppressConfig, roles: BandRoles,
               per_step: Any) -> list[dict[str, Any]]:
    """Apply the cues one after the other (``CUE_ORDER``) and summarise each step with ``per_step``."""
    removed = [np.zeros(len(pp.patches), dtype=bool) for pp in pairs]
    rows = [{"step": f"detector (min area {MIN_AREA_M2:.0f} m²)", "default_on": True,
             **per_step(pairs, removed, removed)}]
    for cue in CUE_ORDER:
        prev = removed
        removed = [r | cue_fires(pp.evidence, cue, cfg, roles) for r, pp in zip(removed, pairs, strict=True)]
        on = cfg.enabled and getattr(cfg, cue).enabled
        rows.append({"step": f"+ {cue} ({_describe(cue, cfg)})", "default_on": on,
                     **per_step(pairs, removed, prev)})
    return rows


def _describe(cue: str, cfg: SuppressConfig) -> str:
    if cue == "mmu":
        return f"area < {cfg.mmu.resolved(10.0):.0f} m²"
    if cue == "vegetation":
        text = f"NDVI t2 >= {cfg.vegetation.ndvi_after_min:.2f}"
        if cfg.vegetation.ndvi_gain_min is not None:
            text += f" or gain >= {cfg.vegetation.ndvi_gain_min:.2f}"
        return text
    if cue == "water":
        return f"NDWI t2 >= {cfg.water.ndwi_after_min:.2f}"
    return f"width < {cfg.shape.min_width_m:.0f} m"


def density_step(pairs: list[PairPatches], removed: list[np.ndarray], before: list[np.ndarray]) -> dict[str, Any]:
    """Patches per km² after one step: mean and max over pairs."""
    dens = [float((~r).sum()) / pp.area_km2 for pp, r in zip(pairs, removed, strict=True) if pp.area_km2 > 0]
    removed_now = sum(int((r & ~b).sum()) for r, b in zip(removed, before, strict=True))
    return {"kept": int(sum(int((~r).sum()) for r in removed)), "removed": removed_now,
            "per_km2_mean": float(np.mean(dens)) if dens else float("nan"),
            "per_km2_max": float(np.max(dens)) if dens else float("nan")}


SWEEPS: dict[str, list[float]] = {
    "mmu": [200, 300, 400, 500, 700, 1000, 1500, 2000],
    "vegetation": [0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2],
    "vegetation_gain": [0.4, 0.3, 0.2, 0.15, 0.1, 0.05],
    "water": [0.3, 0.2, 0.1, 0.05, 0.0, -0.05, -0.1],
    "shape": [5, 6, 7, 8, 10, 12, 15],
}


def select(pairs: list[PairPatches], cfg: SuppressConfig, roles: BandRoles,
           cost: float) -> tuple[list[dict[str, Any]], SuppressConfig]:
    """Pick each cue's threshold in turn (``SWEEPS`` order), on top of the cues already picked.

    The score of a threshold is ``false alarms removed - cost x true change lost`` (a real case lost counts
    as ``cost`` wasted field visits); a cue whose best score is not above 0 is switched off. Run this on
    validation cities only.
    """
    rows: list[dict[str, Any]] = []
    picked = cfg.model_copy(deep=True)
    removed = [np.zeros(len(pp.patches), dtype=bool) for pp in pairs]
    for cue, values in SWEEPS.items():
        best: tuple[float, float | None, list[np.ndarray]] = (0.0, None, removed)
        for v in values:
            now = [r | cue_fires(pp.evidence, cue, picked, roles, v) for r, pp in zip(removed, pairs, strict=True)]
            row = {"cue": cue, "threshold": v, **labelled_step(pairs, now, removed)}
            row["score"] = row["false_alarms_removed"] - cost * row["true_change_lost"]
            rows.append(row)
            if row["score"] > best[0]:
                best = (row["score"], v, now)
        _, value, removed = best
        for row in rows:
            if row["cue"] == cue:
                row["picked"] = value is not None and row["threshold"] == value
        if cue == "mmu":
            picked.mmu = picked.mmu.model_copy(update={"enabled": value is not None,
                                                       "min_area_m2": value or cfg.mmu.resolved(10.0)})
        elif cue == "vegetation":
            picked.vegetation = picked.vegetation.model_copy(update={
                "enabled": value is not None, "ndvi_after_min": value if value is not None else 1.0})
        elif cue == "vegetation_gain":
            picked.vegetation = picked.vegetation.model_copy(update={"ndvi_gain_min": value})
            if value is not None:
                picked.vegetation = picked.vegetation.model_copy(update={"enabled": True})
        elif cue == "water":
            keep = cfg.water.ndwi_after_min
            picked.water = picked.water.model_copy(update={
                "enabled": value is not None, "ndwi_after_min": value if value is not None else keep})
        elif cue == "shape":
            picked.shape = picked.shape.model_copy(update={
                "enabled": value is not None, "min_width_m": value or cfg.shape.min_width_m})
    return rows, picked


# --------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------


def oscd_pairs(loaded: Any, root: Path, cities: list[str], roles: BandRoles, tmp: Path) -> list[PairPatches]:
    """Predict, vectorise and label each OSCD city."""
    out = []
    for pair in load_oscd(root, cities, loaded.card.bands):
        out.append(_oscd_one(loaded, pair, roles, tmp))
    return out


def _oscd_one(loaded: Any, pair: ChangePair, roles: BandRoles, tmp: Path) -> PairPatches:
    transform = rasterio.Affine(*pair.transform) if pair.transform is not None else None
    before = _write(tmp / f"{pair.id}_before.tif", pair.before, pair.crs, transform, None, pair.bands)
    after = _write(tmp / f"{pair.id}_after.tif", pair.after, pair.crs, transform, None, pair.bands)
    prob = model_proba(loaded.model, loaded.card, pair.before, pair.after, loaded.device)
    pp = make_patches(pair.id, prob, pair.valid, loaded.card.threshold, pair.crs, transform, before, after,
                      pair.bands, roles, tmp)
    label_touches(pp, pair.label, pair.valid, transform)
    return pp


def match_card(img: np.ndarray, valid: np.ndarray, card: Any) -> np.ndarray:
    """Per-band linear moments matching of one date onto the card's normalisation mean/std."""
    mean = np.asarray(card.normalization.mean, dtype="float32")[:, None, None]
    std = np.asarray(card.normalization.std, dtype="float32")[:, None, None]
    px = img[:, valid]
    m = px.mean(axis=1)[:, None, None]
    s = np.maximum(px.std(axis=1), 1e-6)[:, None, None]
    out: np.ndarray = ((img - m) / s * std + mean).astype("float32")
    return out


def naip_pairs(loaded: Any, folder: Path, which: str, roles: BandRoles, tmp: Path,
               scale: str = "raw") -> list[PairPatches]:
    """Predict and vectorise NAIP date pairs (``consecutive``, ``quick`` or ``all``).

    ``scale="raw"`` feeds the uint8 values as they are (what ``cspon-rs detect`` does); ``"match"`` maps
    each date's bands linearly onto the card's mean/std first (a farmland stress test for a model trained
    on other units). The cues always read the original pixels.
    """
    files = sorted(folder.glob("m_*.tif"))
    if which == "all":
        combos = list(itertools.combinations(files, 2))
    else:
        combos = list(itertools.pairwise(files))
        if which == "quick":
            combos = combos[:: max(1, len(combos) // QUICK_PAIRS)][:QUICK_PAIRS]
    out = []
    for a, b in combos:
        name = f"{a.stem[-8:]}_{b.stem[-8:]}"
        with aligned_pair(a, b) as (src_a, src_b):
            before = src_a.read().astype("float32")
            after = src_b.read().astype("float32")
            valid = (src_a.dataset_mask() > 0) & (src_b.dataset_mask() > 0)
            crs, transform = src_a.crs, src_a.transform
        if scale == "match":
            before, after = match_card(before, valid, loaded.card), match_card(after, valid, loaded.card)
        prob = model_proba(loaded.model, loaded.card, before, after, loaded.device)
        out.append(make_patches(f"{scale}_{name}", prob, valid, loaded.card.threshold, crs, transform, a, b,
                                list(loaded.card.bands), roles, tmp))
    return out


# --------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return "–" if v != v else f"{v:.3f}"


def labelled_table(title: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"### {title}", "",
             "| step | on by default | patches kept | false alarms removed | true change lost | "
             "warning precision | object recall |",
             "|---|:-:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['step']} | {'yes' if r['default_on'] else 'no'} | {r['kept']} | {r['false_alarms_removed']} | "
            f"{r['true_change_lost']} | {_fmt(r['warning_precision'])} | "
            f"{r['objects_hit']}/{r['objects']} ({_fmt(r['object_recall'])}) |"
        )
    return "\n".join(lines)


def density_table(title: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"### {title}", "",
             "| step | on by default | patches kept (all pairs) | removed by step | per km² mean | per km² max |",
             "|---|:-:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['step']} | {'yes' if r['default_on'] else 'no'} | {r['kept']} | {r['removed']} | "
                     f"{r['per_km2_mean']:.2f} | {r['per_km2_max']:.2f} |")
    return "\n".join(lines)


def select_table(rows: list[dict[str, Any]], cost: float) -> str:
    lines = [f"### Threshold selection (each cue on top of those picked before; score = FA removed - {cost:g} x "
             "true lost)", "",
             "| cue | threshold | kept | false alarms removed | true change lost | score | precision | "
             "object recall | picked |",
             "|---|---:|---:|---:|---:|---:|---:|---:|:-:|"]
    for r in rows:
        lines.append(f"| {r['cue']} | {r['threshold']:g} | {r['kept']} | {r['false_alarms_removed']} | "
                     f"{r['true_change_lost']} | {r['score']:g} | {_fmt(r['warning_precision'])} | "
                     f"{_fmt(r['object_recall'])} | {'**yes**' if r['picked'] else ''} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="default", help="checkpoint path or 'default' (shipped)")
    parser.add_argument("--config", type=Path, default=None,
                        help="detect YAML whose suppress: section is measured (default: the built-in defaults)")
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("CSPON_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--cities", default=None,
                        help="OSCD cities, comma-separated (default: the card's test cities)")
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_PAIRS} consecutive NAIP pairs")
    parser.add_argument("--all-pairs", action="store_true", help="all 45 NAIP date pairs, not only consecutive")
    parser.add_argument("--no-naip", action="store_true")
    parser.add_argument("--naip-scale", default="raw,match",
                        help="NAIP input units: raw (as detect sees them), match (moments matched to the card's "
                        "normalisation), or both comma-separated (default)")
    parser.add_argument("--select", action="store_true",
                        help="pick thresholds on the OSCD cities given (validation cities only, never test)")
    parser.add_argument("--cost", type=float, default=4.0,
                        help="--select: a lost real change counts as this many false alarms (default 4)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    if args.config is not None:
        from cspon_rs.config import load_yaml_config

        cfg = load_yaml_config(args.config, DetectConfig).suppress
    else:
        cfg = DetectConfig().suppress
    ckpt = resolve_checkpoint(args.checkpoint)
    loaded = load_checkpoint(ckpt, device="cpu")
    card = loaded.card
    roles = band_roles(card.bands)
    cities = args.cities.split(",") if args.cities else list(card.training_data.get("test", []))
    report: dict[str, Any] = {"checkpoint": card.detector_id, "threshold": card.threshold,
                              "bands": list(card.bands), "suppress": cfg.model_dump(), "cities": cities}
    print(f"checkpoint {card.detector_id} (threshold {card.threshold:.2f}, bands {card.bands})")
    if not (roles.has_ndvi or roles.has_ndwi):
        print("note: the checkpoint's bands have no NIR: vegetation and water cues skipped")
    out_text: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cspon_suppress_") as tmp_name:
        tmp = Path(tmp_name)
        if cities and card.training_data.get("kind") == "oscd":
            pairs = oscd_pairs(loaded, args.data / "OSCD" / "train_labelled", cities, roles, tmp)
            rows = cumulative(pairs, cfg, roles, labelled_step)
            report["oscd"] = {"steps": rows, "per_city": {
                pp.name: cumulative([pp], cfg, roles, labelled_step) for pp in pairs}}
            out_text.append(labelled_table(f"OSCD {', '.join(cities)} (pooled, {sum(len(p.patches) for p in pairs)}"
                                           " patches)", rows))
            for pp in pairs if len(pairs) > 1 else []:
                out_text.append(labelled_table(f"OSCD {pp.name}", report["oscd"]["per_city"][pp.name]))
            if args.select:
                if set(cities) & set(card.training_data.get("test", [])):
                    print("WARNING: selecting thresholds on test cities", file=sys.stderr)
                sel_rows, picked = select(pairs, cfg, roles, args.cost)
                report["select"] = {"cost": args.cost, "rows": sel_rows, "picked": picked.model_dump()}
                out_text.append(select_table(sel_rows, args.cost))
                out_text.append("picked suppress config:\n" + json.dumps(picked.model_dump(), indent=1))
        elif cities:
            print(f"note: checkpoint trained on {card.training_data.get('kind')!r}, OSCD part skipped")
        naip = args.data / "NAIP-multidate"
        if not args.no_naip and naip.is_dir() and len(card.bands) == 4:
            which = "all" if args.all_pairs else ("quick" if args.quick else "consecutive")
            report["naip"] = {}
            for scale in args.naip_scale.split(","):
                npairs = naip_pairs(loaded, naip, which, roles, tmp, scale)
                rows = cumulative(npairs, cfg, roles, density_step)
                report["naip"][scale] = {"pairs": which, "n_pairs": len(npairs),
                                         "area_km2": [round(p.area_km2, 3) for p in npairs], "steps": rows}
                out_text.append(density_table(
                    f"NAIP-multidate, {len(npairs)} {which} date pairs "
                    f"({np.mean([p.area_km2 for p in npairs]):.1f} km² each), input {scale}", rows))
    print()
    print("\n\n".join(out_text))
    print(f"\n[{time.time() - t0:.0f} s]")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
