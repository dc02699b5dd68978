"""Reproduce the accuracy tables of benchmarks/accuracy.md (same evaluator, same valid pixels, every row).

For every test set -- OSCD hongkong + saclay_e (Sentinel-2), the 7 LEVIR-CD test crops and DSIFN-CD 1_1 + 5_3
(0.5 m-class RGB) -- it scores:

* the shipped checkpoint meant for it (``s2-rgbn`` or ``rgb``) at its card threshold (chosen on validation),
* the previous recipe: random-init MobileNetV2 ``siam_unet_lite`` trained on one source
  (``benchmarks/checkpoints/``: the former shipped OSCD model and the LEVIR-only RGB run),
* optionally the no-synthetic ablation (``--ablation-rgb`` / ``--ablation-s2``: checkpoints trained from
  ``configs/train_rgb_nosyn.yaml`` / ``configs/train_s2_rgbn_nosyn.yaml``),
* CVA + Otsu (``spectral``) and flag-every-pixel (``all-change``).

Pixel figures are pooled over the pairs (with the mean of per-pair F1 beside them); patch figures are for
predicted patches (8-connected components of the thresholded map, above ``--min-area-m2``): warning
precision = share of patches touching labelled change, top-k precision = the same for the k most
confident patches of each scene, object recall = share of labelled change objects touched.

Usage (repository root)::

    .venv/bin/python benchmarks/accuracy.py [--data ../shared/data] [--json outputs/accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cspon_rs.models.checkpoint import shipped_checkpoint  # noqa: E402
from cspon_rs.training.datasets import load_levir, load_oscd  # noqa: E402
from cspon_rs.training.evaluate import EvalReport, evaluate  # noqa: E402

OLD = REPO / "benchmarks" / "checkpoints"
LEVIR_TEST = [
    "test_77_0512_0256",
    "test_102_0512_0000",
    "test_121_0768_0256",
    "test_2_0000_0000",
    "test_2_0000_0512",
    "test_7_0256_0512",
    "test_55_0256_0000",
]
HEADER = (
    "| test set | detector | thr | P | R | **F1** | F1 mean/pair | patches | warning precision | top-10 | top-20 "
    "| object recall | ECE |"
)
RULE = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"


def _fmt(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def row(test_set: str, name: str, r: EvalReport) -> str:
    """One markdown row of the table."""
    m, p = r.metrics, r.patches
    per_pair = float(np.mean([v["f1"] for v in r.per_pair.values()]))
    top = p.get("top_k_precision", {})
    return (
        f"| {test_set} | {name} | {r.threshold:.2f} | {m.precision:.3f} | {m.recall:.3f} | **{m.f1:.3f}** | "
        f"{per_pair:.3f} | {p.get('patches', 0)} | {_fmt(p.get('warning_precision'))} | "
        f"{_fmt(top.get('10', {}).get('precision'))} | {_fmt(top.get('20', {}).get('precision'))} | "
        f"{_fmt(p.get('object_recall'))} | {_fmt(r.ece, 3)} |"
    )


def test_sets(data: Path) -> list[tuple[str, str, list[Any]]]:
    """``(name, model meant for it, pairs)`` for the three test sets."""
    return [
        ("OSCD hongkong + saclay_e", "s2", load_oscd(data / "OSCD" / "train_labelled", ["hongkong", "saclay_e"])),
        ("LEVIR-CD 7 test crops", "rgb", load_levir(data / "LEVIR-CD", LEVIR_TEST, label_threshold=127)),
        ("DSIFN-CD 1_1 + 5_3", "rgb", load_levir(data / "DSIFN-CD", ["1_1", "5_3"], label_threshold=127)),
    ]


def reliability_figure(figures: dict[str, dict[str, Any]], path: Path) -> None:
    """One reliability diagram per test set: observed change frequency against predicted probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(figures), figsize=(4.2 * len(figures), 4.0), squeeze=False)
    for ax, (name, fig_data) in zip(axes[0], figures.items(), strict=True):
        rel = fig_data["reliability"]
        pred = [np.nan if v is None else v for v in rel["mean_predicted"]]
        obs = [np.nan if v is None else v for v in rel["observed"]]
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
        ax.plot(pred, obs, marker="o", label=f"ECE {rel['ece']:.3f}")
        ax.set(title=name.replace(" | ", "\n"), xlabel="predicted change probability", xlim=(0, 1), ylim=(0, 1))
        ax.set_ylabel("observed share of changed pixels")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_data = Path(os.environ.get("CSPON_SHARED_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--ablation-rgb", type=Path, help="rgb recipe without synthetic pairs (checkpoint)")
    parser.add_argument("--ablation-s2", type=Path, help="s2-rgbn recipe without synthetic pairs (checkpoint)")
    parser.add_argument("--min-area-m2", type=float, default=0.0, help="minimum mapping unit of the patches")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--figure", type=Path, help="reliability diagrams of the shipped models (PNG)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    detectors: dict[str, list[tuple[str, Any]]] = {
        "s2": [
            ("s2-rgbn (shipped)", shipped_checkpoint("s2-rgbn")),
            ("s2-rgbn without synthetic", args.ablation_s2),
            ("previous: random-init lite, OSCD", OLD / "oscd_s2_rgbn_siamunet_lite.safetensors"),
            ("CVA + Otsu", "spectral"),
            ("flag every pixel", "all-change"),
        ],
        "rgb": [
            ("rgb (shipped)", shipped_checkpoint("rgb")),
            ("rgb without synthetic", args.ablation_rgb),
            ("previous: random-init lite, LEVIR", OLD / "levir_rgb_siamunet_lite_random_init.safetensors"),
            ("CVA + Otsu", "spectral"),
            ("flag every pixel", "all-change"),
        ],
    }
    lines, figures = [HEADER, RULE], {}
    for name, kind, pairs in test_sets(args.data):
        t0 = time.time()
        for label, det in detectors[kind]:
            if det is None:
                continue
            r = evaluate(det, pairs, panels=False, print_table=False, min_area_m2=args.min_area_m2)
            lines.append(row(name, label, r))
            figures[f"{name} | {label}"] = r.as_dict()
        print(f"[{name}: {len(pairs)} pairs in {time.time() - t0:.0f} s]", file=sys.stderr)
    print("\n".join(lines))
    if args.figure:
        reliability_figure({k: v for k, v in figures.items() if "(shipped)" in k}, args.figure)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
