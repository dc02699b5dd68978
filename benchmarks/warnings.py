"""Warnings a bureau can act on: the figures of issue #20 from one script, one evaluator.

Every row is ``cspon_rs.training.evaluate.evaluate`` with ``pipeline="detect"``: each test pair goes through
``detect_pair`` exactly as ``cspon-rs detect`` runs it (radiometric normalisation, MMU, suppression, and the
warning classifier when the row says so), and the patches it delivers are scored against the labels:

* warning precision = share of delivered patches (warnings) that touch labelled change;
* object recall = share of labelled change objects (8-connected) touched by a warning;
* top-10 precision (mean over pairs with at least 10 warnings), warnings per km², pixel F1.

Test sets (never used to choose anything): OSCD hongkong + saclay_e (``s2-rgbn``), the 7 LEVIR-CD test crops
and DSIFN-CD 1_1 + 5_3 (``rgb``). The NAIP false-alarm figures come from ``benchmarks/input_scaling.py``.

Usage (repository root; ~5 min on 2 CPU cores; needs ../shared/data)::

    .venv/bin/python benchmarks/warnings.py [--json outputs/warnings.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data"
LEVIR_TEST = ["test_77_0512_0256", "test_102_0512_0000", "test_121_0768_0256", "test_2_0000_0000",
              "test_2_0000_0512", "test_7_0256_0512", "test_55_0256_0000"]


def test_sets() -> list[tuple[str, str, Any]]:
    from cspon_rs.training.datasets import load_levir, load_oscd

    return [
        ("OSCD hongkong + saclay_e", "s2-rgbn",
         lambda: load_oscd(DATA / "OSCD" / "train_labelled", ["hongkong", "saclay_e"])),
        ("LEVIR-CD 7 test crops", "rgb", lambda: load_levir(DATA / "LEVIR-CD", LEVIR_TEST)),
        ("DSIFN-CD 1_1 + 5_3", "rgb", lambda: load_levir(DATA / "DSIFN-CD", ["1_1", "5_3"])),
    ]


def score(checkpoint: str, pairs: list[Any], classifier: str) -> dict[str, Any]:
    from cspon_rs.config import load_yaml_config
    from cspon_rs.inference.config import DetectConfig
    from cspon_rs.models.checkpoint import resolve_checkpoint
    from cspon_rs.training.evaluate import evaluate

    cfg = load_yaml_config(REPO / "configs" / "detect.yaml", DetectConfig)
    cfg = cfg.model_copy(update={"classifier": classifier})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rep = evaluate(resolve_checkpoint(checkpoint), pairs, out_dir=tmp, panels=False, print_table=False,
                       detect_config=cfg)
    p = rep.patches
    top10 = (p.get("top_k_precision") or {}).get("10", {})
    return {
        "warnings": p.get("patches"),
        "warning_precision": p.get("warning_precision"),
        "object_recall": p.get("object_recall"),
        "objects": p.get("objects"),
        "top10_precision": top10.get("precision"),
        "top10_pairs": f"{top10.get('pairs')}/{top10.get('of_pairs')}",
        "patches_per_km2": p.get("patches_per_km2"),
        "pixel_f1": rep.metrics.f1,
        "pr_curve": p.get("pr_curve"),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _f(v: Any, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=["s2-rgbn", "rgb"], help="Only the test sets of this checkpoint")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    print("| test set | detector | classifier | warnings | warning precision | object recall | top-10 precision "
          "| warnings / km² | pixel F1 |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name, ckpt, load in test_sets():
        if args.only and ckpt != args.only:
            continue
        pairs = load()
        for clf in ("none", "auto"):
            r = score(ckpt, pairs, clf)
            r.update(test_set=name, checkpoint=ckpt, classifier="shipped" if clf == "auto" else "none")
            rows.append(r)
            print(f"| {name} | `{ckpt}` | {r['classifier']} | {r['warnings']} | {_f(r['warning_precision'])} | "
                  f"{_f(r['object_recall'])} | {_f(r['top10_precision'])} ({r['top10_pairs']}) | "
                  f"{_f(r['patches_per_km2'], '.1f')} | {_f(r['pixel_f1'])} |", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
