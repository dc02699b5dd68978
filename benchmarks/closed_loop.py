"""Closed-loop benchmark: do a county's field verifications make the next warnings better?

On labelled scenes the shipped model never trained on (OSCD hongkong + saclay_e, Sentinel-2, model
``s2-rgbn``), it simulates what a bureau does:

1. detect: the shipped model predicts each scene; change patches (4-connected, >= 200 m², as ``detect``
   makes them) are ranked by confidence (mean calibrated probability; no permits or control lines here);
2. verify: the first N warnings in that order are "checked in the field" by the real label: a warning is
   real change when it touches labelled change (label 1 = its polygon), else false change (label 0);
3. fine-tune: ``cspon_rs.training.finetune.fine_tune`` on those N verifications (30 % held back to score
   and to re-select the threshold), exactly as ``cspon-rs train --init-from s2-rgbn --labels ...`` does;
4. re-run: both the shipped and the fine-tuned model predict the scenes again and are scored on the
   **unverified remainder** only.

No test pixel is used for training: every pixel the fine-tune could see (each verified polygon's box plus
its context) is excluded from scoring, and so is every patch that reaches into it; labelled objects touched
by a verified polygon are left out of object recall.

Usage (repository root; about 5 minutes per fine-tune round on 2 CPU cores)::

    .venv/bin/python benchmarks/closed_loop.py [--n 20,50,100] [--json outputs/closed_loop.json]
        [--figure docs/img/closed_loop.png] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cspon_rs.geo.pixels import pixel_area_m2  # noqa: E402
from cspon_rs.models.checkpoint import LoadedModel, load_checkpoint, shipped_checkpoint  # noqa: E402
from cspon_rs.training.datasets import ChangePair, load_oscd  # noqa: E402
from cspon_rs.training.evaluate import model_proba  # noqa: E402

CITIES = ["hongkong", "saclay_e"]
MIN_AREA_M2 = 200.0
FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


@dataclass
class Scene:
    """A labelled test scene written as 4-band GeoTIFFs (what a bureau's store points to)."""

    pair: ChangePair
    before: Path
    after: Path
    pixel_m2: float


@dataclass
class Warning_:
    """One predicted patch of one scene."""

    scene: int
    mask: np.ndarray  # bool, scene grid
    confidence: float
    real: bool


def write_scenes(pairs: list[ChangePair], folder: Path) -> list[Scene]:
    """Stack each OSCD city into before/after GeoTIFFs on the date-1 grid."""
    import rasterio
    from rasterio.transform import Affine

    scenes = []
    for p in pairs:
        tr = Affine(*p.transform) if p.transform else Affine.identity()
        paths = []
        for name, arr in (("before", p.before), ("after", p.after)):
            path = folder / f"{p.id}_{name}.tif"
            profile = {"driver": "GTiff", "height": arr.shape[1], "width": arr.shape[2], "count": arr.shape[0],
                       "dtype": "uint16", "crs": p.crs, "transform": tr}
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(arr.astype(np.uint16))
                dst.descriptions = tuple(p.bands)
            paths.append(path)
        area = pixel_area_m2(p.crs, p.transform, p.shape)
        scenes.append(Scene(p, paths[0], paths[1], float(area if area is not None else 100.0)))
    return scenes


def patches(prob: np.ndarray, scene: Scene, index: int, threshold: float) -> list[Warning_]:
    """Predicted patches of one scene (4-connected components >= 200 m²) with confidence and truth."""
    comps, _ = ndimage.label((prob >= threshold) & scene.pair.valid, structure=FOUR)
    out = []
    truth = scene.pair.label.astype(bool)
    for k, sl in enumerate(ndimage.find_objects(comps), start=1):
        if sl is None:
            continue
        mask = np.zeros_like(truth)
        mask[sl] = comps[sl] == k
        if mask.sum() * scene.pixel_m2 < MIN_AREA_M2:
            continue
        out.append(Warning_(index, mask, float(prob[mask].mean()), bool((truth & mask).any())))
    return out


def predict(loaded: LoadedModel, scenes: list[Scene]) -> list[np.ndarray]:
    """Whole-scene calibrated probabilities."""
    return [model_proba(loaded.model, loaded.card, s.pair.before, s.pair.after) for s in scenes]


def labels_gpkg(verified: list[Warning_], scenes: list[Scene], path: Path) -> None:
    """The verified warnings as a labels layer (the schema of ``cspon-rs labels export``)."""
    import geopandas as gpd
    from rasterio.features import shapes
    from rasterio.transform import Affine
    from shapely.geometry import shape
    from shapely.ops import unary_union

    rows = []
    for i, w in enumerate(verified):
        s = scenes[w.scene]
        tr = Affine(*s.pair.transform)  # type: ignore[misc]
        geoms = [shape(g) for g, v in shapes(w.mask.astype(np.uint8), mask=w.mask, transform=tr) if v == 1]
        rows.append({"geometry": unary_union(geoms), "label": int(w.real), "verification_id": i + 1,
                     "scene_before": str(s.before), "scene_after": str(s.after),
                     "result": "illegal" if w.real else "false_change"})
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs=scenes[0].pair.crs)
    gdf.to_file(path, driver="GPKG", layer="verified_labels")


def exposed_masks(verified: list[Warning_], scenes: list[Scene], context_px: int) -> list[np.ndarray]:
    """Pixels a fine-tune could have seen: each verified patch's box grown by the context."""
    out = [np.zeros(s.pair.shape, dtype=bool) for s in scenes]
    for w in verified:
        ys, xs = np.nonzero(w.mask)
        h, wd = w.mask.shape
        out[w.scene][max(ys.min() - context_px - 1, 0) : min(ys.max() + context_px + 2, h),
                     max(xs.min() - context_px - 1, 0) : min(xs.max() + context_px + 2, wd)] = True
    return out


def score_remainder(probs: list[np.ndarray], threshold: float, scenes: list[Scene],
                    exposed: list[np.ndarray]) -> dict[str, Any]:
    """Warning precision, top-20 precision, pixel F1 and object recall outside the exposed pixels."""
    warns = [w for i, (p, s) in enumerate(zip(probs, scenes, strict=True)) for w in patches(p, s, i, threshold)
             if not (w.mask & exposed[i]).any()]
    tp = fp = fn = 0
    objects = touched = 0
    for i, (p, s) in enumerate(zip(probs, scenes, strict=True)):
        keep = s.pair.valid & ~exposed[i]
        pred, truth = (p >= threshold) & keep, s.pair.label.astype(bool) & keep
        tp += int((pred & truth).sum())
        fp += int((pred & ~truth).sum())
        fn += int((~pred & truth).sum())
        comps, n = ndimage.label(s.pair.label.astype(bool), structure=np.ones((3, 3)))
        flagged = np.zeros_like(truth)
        for w in warns:
            if w.scene == i:
                flagged |= w.mask
        for k in range(1, n + 1):
            obj = comps == k
            if (obj & exposed[i]).any():
                continue
            objects += 1
            touched += bool((obj & flagged).any())
    ranked = sorted(warns, key=lambda w: -w.confidence)
    top = ranked[:20]
    return {
        "remainder_warnings": len(warns),
        "warning_precision": sum(w.real for w in warns) / len(warns) if warns else 0.0,
        "top20_precision": sum(w.real for w in top) / len(top) if top else 0.0,
        "pixel_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "object_recall": touched / objects if objects else 0.0,
        "objects": objects,
        "threshold": threshold,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("CSPON_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--n", default="20,50,100", help="numbers of verified warnings, comma-separated")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--crops-per-epoch", type=int, default=256)
    parser.add_argument("--context-px", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="N = 20 only, 1 short epoch (a smoke run)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ns = [20] if args.quick else [int(x) for x in args.n.split(",")]
    epochs, crops = (1, 32) if args.quick else (args.epochs, args.crops_per_epoch)
    shipped = load_checkpoint(shipped_checkpoint("s2-rgbn"))
    tmp = Path(tempfile.mkdtemp(prefix="cspon_closed_loop_"))
    scenes = write_scenes(load_oscd(args.data / "OSCD" / "train_labelled", CITIES, shipped.card.bands), tmp)
    base_probs = predict(shipped, scenes)
    ranked = sorted((w for i, (p, s) in enumerate(zip(base_probs, scenes, strict=True))
                     for w in patches(p, s, i, shipped.card.threshold)), key=lambda w: -w.confidence)
    print(f"shipped {shipped.card.detector_id}: {len(ranked)} warnings on {', '.join(CITIES)}, "
          f"{sum(w.real for w in ranked)} real", file=sys.stderr)
    none = [np.zeros(s.pair.shape, dtype=bool) for s in scenes]
    rows: list[dict[str, Any]] = [{"n": 0, "model": "shipped", **score_remainder(base_probs, shipped.card.threshold,
                                                                                 scenes, none)}]
    for n in ns:
        verified = ranked[:n]
        gpkg = tmp / f"verified_{n}.gpkg"
        labels_gpkg(verified, scenes, gpkg)
        exposed = exposed_masks(verified, scenes, args.context_px)
        from cspon_rs.training.finetune import fine_tune

        t0 = time.time()
        result = fine_tune("s2-rgbn", gpkg, tmp / f"run_{n}", epochs=epochs, crops_per_epoch=crops,
                           context_px=args.context_px, num_threads=args.threads, progress=False)
        minutes = (time.time() - t0) / 60
        tuned = load_checkpoint(result.checkpoint)
        rows.append({"n": n, "model": "shipped", "verified_real": sum(w.real for w in verified),
                     **score_remainder(base_probs, shipped.card.threshold, scenes, exposed)})
        rows.append({"n": n, "model": "fine-tuned", "verified_real": sum(w.real for w in verified),
                     "fine_tune_minutes": round(minutes, 1), "holdout": result.candidate,
                     "holdout_parent": result.parent,
                     **score_remainder(predict(tuned, scenes), tuned.card.threshold, scenes, exposed)})
        print(f"N={n}: fine-tune {minutes:.1f} min", file=sys.stderr)
    print("| N verified (real) | model | remainder warnings | warning precision | top-20 precision | pixel F1 "
          "| object recall | threshold | fine-tune min |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        real = f" ({r['verified_real']})" if "verified_real" in r else ""
        print(f"| {r['n']}{real} | {r['model']} | {r['remainder_warnings']} | {r['warning_precision']:.2f} | "
              f"{r['top20_precision']:.2f} | {r['pixel_f1']:.3f} | {r['object_recall']:.2f} ({r['objects']}) | "
              f"{r['threshold']:.2f} | {r.get('fine_tune_minutes', '')} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1, default=float) + "\n", encoding="utf-8")
    if args.figure:
        learning_curve(rows, args.figure)


def learning_curve(rows: list[dict[str, Any]], path: Path) -> None:
    """Warning precision and object recall on the remainder against the number of verifications."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for model, style in (("shipped", "o--"), ("fine-tuned", "s-")):
        pts = [r for r in rows if r["model"] == model or (r["n"] == 0 and model == "fine-tuned")]
        xs = [r["n"] for r in pts]
        for ax, key, title in zip(axes, ("warning_precision", "top20_precision", "object_recall"),
                                  ("warning precision (remainder)", "top-20 precision", "object recall"),
                                  strict=True):
            ax.plot(xs, [r[key] for r in pts], style, label=model)
            ax.set(title=title, xlabel="verified warnings N", ylim=(0, 1))
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
