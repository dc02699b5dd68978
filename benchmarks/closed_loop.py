"""Closed-loop learning curve: does a county's desk triage make its next warnings better?

For every labelled scene (a "county" of one scene), it simulates what a bureau does with the triage mode:

1. detect: ``detect_pair`` (the same radiometry, MMU and suppression a user gets) gives the candidate patches,
   each with its classifier features; the checkpoint's shipped classifier scores them, and those at or above
   its operating point are the warnings (N = 0);
2. triage: a desk reviewer answers the first N candidates **in the order the triage mode presents them**
   (highest confidence first; below the operating point they are 内业排除-suggested) from the scene's
   labels: real change when the patch touches labelled change, else a false alarm (``1`` / ``3`` in the triage keys);
3. re-fit: exactly :func:`cspon_rs.training.county_refit.refit_county`'s recipe (25 % of the labels held back;
   the candidate is fitted on the rest plus the shipped fitting patches at half their weight, and replaces
   the current classifier only if its average precision on the held-back labels is higher);
4. re-score: the county's current classifier scores the **untriaged remainder** of the candidate patches
   (every patch no suppression cue removed); those at or above its operating point are the warnings it
   raises (what the next ``detect --db --county`` run delivers with the county's model). Warning precision
   (share of raised warnings that touch labelled change) and object recall (labelled objects touched by a
   raised warning, over all labelled objects no triaged patch touched) are reported for the shipped and the
   county classifier on that same remainder, with the re-fit seconds.

Rounds are cumulative (N = 25, then 50 more, ...), as a reviewer's labels accumulate. Nothing is tuned here:
the recipe and the operating points come from the fitting data (see the classifier's card).

Usage (repository root; a few minutes on 2 CPU cores; needs the data)::

    .venv/bin/python benchmarks/closed_loop.py --data ../shared/data/OSCD/train_labelled --ids hongkong,saclay_e \\
        --checkpoint s2-rgbn --n 0,25,50,100,200 --json outputs/closed_loop.json
    .venv/bin/python benchmarks/closed_loop.py --data ../shared/data/LEVIR-CD --ids test_77_0512_0256,... \\
        --checkpoint rgb --pool

``--data`` is a folder in the OSCD layout (``A/<city>/``, ``label/<city>/cm/``) or the LEVIR layout
(``A/``, ``B/``, ``label/`` with the same file names; PNG or GeoTIFF). ``--pool`` treats all ids as one
county (useful for small crops).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cspon_rs.inference.classify import classifier_path_for, load_classifier  # noqa: E402
from cspon_rs.models.checkpoint import load_card, resolve_checkpoint  # noqa: E402
from cspon_rs.training.county_refit import (  # noqa: E402
    _average_precision,
    _holdout_split,
    load_shipped_patches,
    shipped_patches_path,
)
from cspon_rs.training.warning_classifier import PatchTable, collect, fit_classifier  # noqa: E402


def load_pairs(data: Path, ids: list[str] | None, bands: list[str]) -> list[Any]:
    """OSCD or LEVIR-layout pairs."""
    from cspon_rs.training.datasets import load_levir, load_oscd

    if (data / "label").is_dir() and any(p.is_dir() for p in (data / "label").iterdir()):
        return load_oscd(data, ids, bands=bands)
    return load_levir(data, ids)


def detect_fn(checkpoint: Path) -> Any:
    from cspon_rs.config import load_yaml_config
    from cspon_rs.inference.config import DetectConfig
    from cspon_rs.inference.detect import detect_pair

    cfg = load_yaml_config(REPO / "configs" / "detect.yaml", DetectConfig)
    kw = {**cfg.detect_kwargs(), "checkpoint": str(checkpoint), "classifier": "none", "progress": False,
          "workers": 1, "scheduler": None}
    return lambda a, b, o: detect_pair(a, b, o, **kw)


def remainder_figures(conf: np.ndarray, op: float, table: PatchTable, rest: np.ndarray,
                      excluded_objects: set[str]) -> dict[str, Any]:
    """Precision and object recall of the warnings still raised among the untriaged warnings ``rest``.

    Object recall counts every labelled object of the scene (found by the detector or not) except those a
    triaged warning touched.
    """
    raised = rest & (conf >= op)
    total = sum(table.n_objects.values()) - len(excluded_objects)
    hit = set().union(*[table.objects[k] for k in np.flatnonzero(raised)]) - excluded_objects \
        if raised.any() else set()
    return {
        "warnings": int(raised.sum()),
        "warning_precision": float(table.touches[raised].mean()) if raised.any() else None,
        "object_recall": len(hit) / total if total > 0 else None,
        "objects": total,
    }


def curve_for(table: PatchTable, shipped: Any, base: tuple[pd.DataFrame, np.ndarray, np.ndarray] | None,
              ns: list[int], seed: int) -> list[dict[str, Any]]:
    """The learning curve of one county (one scene, or a pooled set)."""
    x = table.features
    ship_conf = shipped.confidence(x)
    current = shipped
    conf = ship_conf.copy()
    order = np.argsort(-conf, kind="stable")
    triage_order = [int(k) for k in order]  # the triage queue: most confident first
    rows = []
    for n in ns:
        n_eff = min(n, len(triage_order))
        triaged = np.zeros(len(x), dtype=bool)
        triaged[triage_order[:n_eff]] = True
        rest = ~triaged
        excluded = set().union(*[table.objects[k] for k in np.flatnonzero(triaged)]) if triaged.any() else set()
        row: dict[str, Any] = {"n": n, "n_labelled": n_eff, "n_real": int(table.touches[triaged].sum())}
        if n_eff >= 10 and 0 < table.touches[triaged].sum() < n_eff:
            t0 = time.perf_counter()
            ids = [str(k) for k in np.flatnonzero(triaged)]
            y = table.touches[triaged]
            held = _holdout_split(ids, y, 0.25, seed)
            lx = x[triaged].reset_index(drop=True)
            tx, ty = lx[~held].reset_index(drop=True), y[~held]
            groups = np.array([f"county-{k % 5}" for k in range(len(ty))], dtype=object)
            weights = np.ones(len(ty))
            objs = [frozenset({f"c{k}"}) if v else frozenset() for k, v in enumerate(ty)]
            if base is not None:
                bx, by, bg = base
                bx = bx.reindex(columns=list(x.columns))
                tx = pd.concat([tx, bx], ignore_index=True)
                weights = np.concatenate([weights, np.full(len(by), 0.5 * len(ty) / max(len(by), 1))])
                groups = np.concatenate([groups, np.asarray([f"shipped-{g}" for g in bg], dtype=object)])
                objs += [frozenset({f"s{k}"}) if v else frozenset() for k, v in enumerate(by)]
                ty = np.concatenate([ty, by])
            t = PatchTable(features=tx, touches=ty, objects=objs, group=groups,
                           variant=np.array(["as is"] * len(ty), dtype=object), n_objects={("a", "b"): int(ty.sum())})
            cand, _ = fit_classifier(t, shipped.bands, seed=seed, target_precision=shipped.target_precision,
                                     sample_weight=weights)
            hx, hy = lx[held], y[held]
            cand_ap = _average_precision(cand.confidence(hx), hy)
            cur_ap = _average_precision(current.confidence(hx), hy)
            promoted = cand_ap > cur_ap
            if promoted:
                current = cand
            row.update(refit_seconds=round(time.perf_counter() - t0, 2), candidate_ap=round(cand_ap, 3),
                       current_ap=round(cur_ap, 3), promoted=bool(promoted))
        conf = current.confidence(x)
        row["shipped"] = remainder_figures(ship_conf, shipped.min_confidence, table, rest, excluded)
        row["county"] = remainder_figures(conf, current.min_confidence, table, rest, excluded)
        rows.append(row)
    return rows


def rescore_timing(shipped: Any, base: tuple[pd.DataFrame, np.ndarray, np.ndarray] | None,
                   n: int = 3000) -> dict[str, float]:
    """Seconds to re-fit from 200 labels (+ shipped patches) and re-score ``n`` warnings."""
    if base is None:
        return {}
    bx, by, bg = base
    rng = np.random.default_rng(0)
    pick = rng.choice(len(bx), size=min(200, len(bx)), replace=False)
    t0 = time.perf_counter()
    tx = pd.concat([bx.iloc[pick], bx], ignore_index=True)
    ty = np.concatenate([by[pick], by])
    w = np.concatenate([np.ones(len(pick)), np.full(len(by), 0.5 * len(pick) / len(by))])
    g = np.concatenate([np.array([f"c{k % 5}" for k in range(len(pick))], dtype=object),
                        np.asarray([f"s-{x}" for x in bg], dtype=object)])
    objs = [frozenset({str(k)}) if v else frozenset() for k, v in enumerate(ty)]
    t = PatchTable(features=tx, touches=ty, objects=objs, group=g,
                   variant=np.array(["as is"] * len(ty), dtype=object), n_objects={("a", "b"): int(ty.sum())})
    cand, _ = fit_classifier(t, shipped.bands, seed=0, sample_weight=w)
    t1 = time.perf_counter()
    many = bx.iloc[rng.choice(len(bx), size=n, replace=True)]
    cand.confidence(many)
    t2 = time.perf_counter()
    return {"refit_s": round(t1 - t0, 2), "rescore_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
            "warnings": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--ids", default=None, help="comma-separated pair ids / cities (default: all)")
    parser.add_argument("--checkpoint", default="s2-rgbn")
    parser.add_argument("--n", default="0,25,50,100,200", help="cumulative desk labels per county")
    parser.add_argument("--pool", action="store_true", help="all ids as one county")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    ckpt = Path(resolve_checkpoint(args.checkpoint))
    card = load_card(ckpt)
    clf_path = classifier_path_for(ckpt)
    if not clf_path.is_file():
        sys.exit(f"{args.checkpoint}: no warning classifier beside the checkpoint (cspon-rs classifier fit)")
    shipped = load_classifier(clf_path)
    base = load_shipped_patches(shipped_patches_path(ckpt))
    ids = args.ids.split(",") if args.ids else None
    pairs = load_pairs(args.data, ids, list(card.bands))
    ns = [int(v) for v in args.n.split(",")]
    detect = detect_fn(ckpt)
    groups = [pairs] if args.pool else [[p] for p in pairs]
    out: dict[str, Any] = {"checkpoint": card.detector_id, "data": str(args.data), "n": ns, "counties": {}}
    with tempfile.TemporaryDirectory():
        for group in groups:
            name = "+".join(p.id for p in group) if len(group) < 4 else f"{len(group)} pairs pooled"
            print(f"[{name}] detect ...", flush=True)
            table = collect(group, detect, bands=card.bands, pixel_size_m=float(card.pixel_size_m or 1.0),
                            perturbations=0)
            rows = curve_for(table, shipped, base, ns, args.seed)
            out["counties"][name] = {"patches": len(table), "real": int(table.touches.sum()), "rounds": rows}
            for r in rows:
                s, c = r["shipped"], r["county"]
                fmt = lambda v: "  –  " if v is None else f"{v:.3f}"  # noqa: E731
                print(f"  N={r['n']:>3} labelled {r['n_labelled']:>3} ({r['n_real']:>3} real)  shipped: "
                      f"{s['warnings']:>4} warnings P {fmt(s['warning_precision'])} R {fmt(s['object_recall'])}  "
                      f"county: {c['warnings']:>4} P {fmt(c['warning_precision'])} R {fmt(c['object_recall'])}"
                      + (f"  re-fit {r['refit_seconds']} s AP {r['candidate_ap']} vs {r['current_ap']}"
                         f"{' promoted' if r['promoted'] else ' refused'}" if "refit_seconds" in r else ""),
                      flush=True)
    out["timing_3000"] = rescore_timing(shipped, base)
    print(f"re-fit from 200 labels + re-score 3000 warnings: {out['timing_3000']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
