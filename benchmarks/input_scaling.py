"""Does detect give the same warnings whatever the input's scaling? NAIP 10-date stack, both models.

Every consecutive pair of the 10 NAIP dates in ``../shared/data/NAIP-multidate`` (farmland in North Dakota,
5 m, R,G,B,NIR, 8-bit, almost nothing built) runs through :func:`cspon_rs.inference.detect.detect_pair` with
the shipped defaults (``configs/detect.yaml``: radiometry ``card``, MMU ``auto``, suppression on) three
times: raw 8-bit, x 10 as uint16, and as float 0-1 (/ 255). ``s2-rgbn`` takes the 4 bands, ``rgb`` the first
three. Printed per model and scaling: warnings (unsuppressed patches) per km², and the agreement across
scalings (largest relative difference of the warning count of a pair, and the mean IoU of the change masks
against the raw run). ``--compare-none`` adds runs with ``radiometry: none`` (the behaviour before #20).

Nothing here is tuned: NAIP is kept out of training and validation (it is the false-alarm check).

    OMP_NUM_THREADS=1 python benchmarks/input_scaling.py [--crop PX] [--compare-none] [--out DIR]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import rasterio
from rasterio.windows import Window

warnings.filterwarnings("ignore", category=rasterio.errors.NodataShadowWarning)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cspon_rs.inference.detect import detect_pair  # noqa: E402
from cspon_rs.inference.vectorize import PATCH_LAYER  # noqa: E402

NAIP = REPO.parent / "shared" / "data" / "NAIP-multidate"
SCALINGS: dict[str, tuple[str, float]] = {"raw 8-bit": ("uint8", 1.0), "x10 uint16": ("uint16", 10.0),
                                          "float 0-1": ("float32", 1 / 255.0)}
MODELS: dict[str, int] = {"s2-rgbn": 4, "rgb": 3}


def _copy(src_path: Path, dst: Path, dtype: str, factor: float, bands: int, crop: int | None) -> Path:
    with rasterio.open(src_path) as src:
        win = Window(0, 0, min(crop, src.width), min(crop, src.height)) if crop else None
        data = src.read(list(range(1, bands + 1)), window=win).astype(np.float64)
        valid = src.dataset_mask(window=win) > 0
        profile = src.profile | {"dtype": dtype, "count": bands, "nodata": 0, "tiled": False}
        profile.pop("photometric", None)  # 4 bands are R,G,B,NIR, not RGB + alpha
        if win is not None:
            profile |= {"width": int(win.width), "height": int(win.height), "transform": src.window_transform(win)}
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    out = data * factor
    out[:, ~valid] = 0
    with rasterio.open(dst, "w", **profile) as ds:
        ds.write(out.astype(dtype))
    return dst


#: Other operating points a bureau might set (``--min-confidence``), counted from the same run.
LEVELS = (0.3, 0.4, 0.5)


def _warnings(path: Path) -> tuple[int, int, dict[float, int]]:
    """Unsuppressed patches, those left before the warning classifier (its flags counted back in), and those
    that a ``min_confidence`` of each of :data:`LEVELS` would raise."""
    df = pyogrio.read_dataframe(path, layer=PATCH_LAYER, read_geometry=False)
    if not len(df):
        return 0, 0, dict.fromkeys(LEVELS, 0)
    flag = df["suppressed_by"]
    scored = flag.isna() | (flag == "classifier")
    at = {t: int((scored & (df["confidence"] >= t)).sum()) for t in LEVELS} if "confidence" in df else {}
    return int(flag.isna().sum()), int(scored.sum()), at


def run(crop: int | None, compare_none: bool, work: Path, models: list[str] | None = None,
        classifier: str | None = None) -> dict[str, Any]:
    dates = sorted(NAIP.glob("m_*.tif"))
    pairs = list(itertools.pairwise(dates))
    results: dict[str, Any] = {"pairs": [f"{a.stem[-8:]}->{b.stem[-8:]}" for a, b in pairs], "crop": crop,
                               "runs": {}}
    methods = ["card", "none"] if compare_none else ["card"]
    t0 = time.perf_counter()
    chosen = {m: n for m, n in MODELS.items() if models is None or m in models}
    for model, nb in chosen.items():
        for scaling, (dtype, factor) in SCALINGS.items():
            folder = work / model / scaling.replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            copies = {d: _copy(d, folder / d.name, dtype, factor, nb, crop) for d in dates}
            for method in methods:
                if method == "none" and scaling == "float 0-1":
                    continue
                rows = []
                for k, (a, b) in enumerate(pairs):
                    out = folder / f"out_{method}_{k}"
                    extra = {"classifier": classifier} if classifier is not None else {}
                    res = detect_pair(copies[a], copies[b], out, checkpoint=model, progress=False, radiometry=method,
                                      device="cpu", **extra)
                    with rasterio.open(res.mask_path) as src:
                        mask = src.read(1) == 1
                    np.save(out / "mask.npy", mask)
                    km2 = res.valid_pixels * (res.pixel_size_m or 0.0) ** 2 / 1e6
                    warned, before_clf, at = _warnings(res.patches_path)
                    rows.append({"pair": results["pairs"][k], "warnings": warned, "before_classifier": before_clf,
                                 "at_min_confidence": at,
                                 "patches": res.n_patches, "km2": km2, "radiometry": res.radiometry.summary()
                                 if res.radiometry else "", "empty_reason": res.empty_reason})
                key = f"{model} | {scaling} | radiometry {method}"
                results["runs"][key] = rows
                total = sum(r["warnings"] for r in rows)
                pre = sum(r["before_classifier"] for r in rows)
                area = sum(r["km2"] for r in rows)
                print(f"{key:45s} warnings {total:5d} on {area:6.1f} km² = {total / area:6.2f} /km² "
                      f"(before the classifier {pre / area:6.2f} /km²; {time.perf_counter() - t0:4.0f} s)", flush=True)
                if rows and rows[0]["at_min_confidence"]:
                    print(" " * 45 + " at --min-confidence " + ", ".join(
                        f"{t}: {sum(r['at_min_confidence'][t] for r in rows) / area:.2f}" for t in LEVELS) + " /km²")
    # agreement across scalings (radiometry card), per model
    results["agreement"] = {}
    for model in chosen:
        ref = results["runs"][f"{model} | raw 8-bit | radiometry card"]
        agree: dict[str, Any] = {}
        for scaling in list(SCALINGS)[1:]:
            rows = results["runs"][f"{model} | {scaling} | radiometry card"]
            rel = [abs(r["before_classifier"] - q["before_classifier"]) / max(q["before_classifier"], 1)
                   for r, q in zip(rows, ref, strict=True)]
            ious = []
            for k in range(len(rows)):
                m0 = np.load(work / model / "raw_8-bit" / f"out_card_{k}" / "mask.npy")
                m1 = np.load(work / model / scaling.replace(" ", "_") / f"out_card_{k}" / "mask.npy")
                union = (m0 | m1).sum()
                ious.append(float((m0 & m1).sum() / union) if union else 1.0)
            agree[scaling] = {"max_rel_warning_diff": max(rel), "mean_mask_iou": float(np.mean(ious)),
                              "total_warnings": sum(r["before_classifier"] for r in rows),
                              "total_raw": sum(q["before_classifier"] for q in ref)}
            print(f"{model:8s} {scaling:11s} vs raw: warnings before the classifier "
                  f"{agree[scaling]['total_warnings']} vs {agree[scaling]['total_raw']}, largest per-pair "
                  f"difference {max(rel):.1%}, mean mask IoU {np.mean(ious):.3f}", flush=True)
        results["agreement"][model] = agree
    results["seconds"] = time.perf_counter() - t0
    return results


def test_f1() -> dict[str, Any]:
    """Pixel F1 on each shipped card's **test** pairs, radiometry none vs the card's default (measured, not tuned:
    the default was chosen on validation pairs)."""
    from cspon_rs.models.card_stats import card_pairs, score_methods
    from cspon_rs.models.checkpoint import load_card, resolve_checkpoint

    out: dict[str, Any] = {}
    for model in MODELS:
        path = resolve_checkpoint(model).with_suffix(".json")
        card = load_card(path)
        default = card.input.radiometry if card.input is not None else "none"
        pairs = card_pairs(path, card, "test")
        print(f"{model}: test pairs {[p.id for p in pairs]}, threshold {card.threshold}", flush=True)
        out[model] = score_methods(path, card, pairs, ("none", default), (("raw", 1.0),))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crop", type=int, default=None, help="Use the top-left PX x PX of each date (default: all)")
    parser.add_argument("--compare-none", action="store_true", help="Also run radiometry none (before #20)")
    parser.add_argument("--json", type=Path, default=None, help="Write every figure here")
    parser.add_argument("--models", default=None, help="Comma-separated subset of s2-rgbn,rgb (default both)")
    parser.add_argument("--classifier", default=None, help="detect's --classifier (default: the checkpoint's)")
    parser.add_argument("--test-f1", action="store_true", help="Only: pixel F1 on the cards' test pairs, none vs "
                        "the card's radiometry")
    args = parser.parse_args()
    if args.test_f1:
        figures = test_f1()
        if args.json is not None:
            from cspon_rs.exports.fileio import write_json

            write_json(args.json, figures)
        return
    with tempfile.TemporaryDirectory(prefix="cspon-naip-") as tmp:
        results = run(args.crop, args.compare_none, Path(tmp), args.models.split(",") if args.models else None,
                      args.classifier)
    print(f"total {results['seconds']:.0f} s")
    if args.json is not None:
        from cspon_rs.exports.fileio import write_json

        write_json(args.json, results)


if __name__ == "__main__":
    main()
