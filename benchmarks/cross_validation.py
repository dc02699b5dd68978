"""Leave-one-city-out figures of ``cspon-rs cross-validate`` runs: recipes side by side, per city.

For every run folder given (each made by ``cspon-rs cross-validate``), prints

1. the mean out-of-fold pixel F1 per radiometric normalisation (``cv.json``; the run's chosen one marked);
2. per held-out city, at the threshold picked on the other cities: pixel precision/recall/F1 and, through
   ``detect`` as a bureau runs it (the run's radiometry, MMU, suppression; no classifier), the warnings,
   warning precision and object recall of the fold network that never saw the city.

Test pairs are never read: only the config's train + val cities are held out.

Usage (repository root; needs ../shared/data and the run folders)::

    .venv/bin/python benchmarks/cross_validation.py RUN [RUN ...] [--json outputs/cross_validation.json] \
        [--figure docs/img/cross_validation.png]
    .venv/bin/python benchmarks/cross_validation.py --from-json outputs/cross_validation.json --figure F.png
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def fold_warnings(run: Path, radiometry: str, per_pair: dict[str, Any]) -> dict[str, Any]:
    """Warning-level figures of each held-out city through detect, by its fold network."""
    from cspon_rs.config import load_yaml_config
    from cspon_rs.inference.config import DetectConfig
    from cspon_rs.models.card_stats import card_pairs
    from cspon_rs.models.checkpoint import load_card
    from cspon_rs.training.evaluate import evaluate

    cfg = load_yaml_config(REPO / "configs" / "detect.yaml", DetectConfig)
    cfg = cfg.model_copy(update={"classifier": "none", "radiometry": radiometry})
    out: dict[str, Any] = {}
    for city, row in per_pair.items():
        ckpt = run / f"fold_{city}" / "best.safetensors"
        card = load_card(ckpt)
        pairs = card_pairs(ckpt.with_suffix(".json"), card, "val")  # the held-out city, nothing else
        assert [p.id for p in pairs] == [city], (ckpt, [p.id for p in pairs])
        with tempfile.TemporaryDirectory() as tmp:
            rep = evaluate(ckpt, pairs, out_dir=tmp, panels=False, print_table=False, threshold=row["threshold"],
                           detect_config=cfg.model_copy(update={"tile_size": 256}))
        p = rep.patches
        out[city] = {"warnings": p.get("patches"), "warning_precision": p.get("warning_precision"),
                     "object_recall": p.get("object_recall"), "objects": p.get("objects")}
    return out


def plot(everything: dict[str, Any], path: Path) -> None:
    """Per held-out city: pixel F1 of every run, and warning precision / object recall of every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = list(everything)
    cities = list(everything[runs[0]]["pixels"]["per_pair"])
    x = np.arange(len(cities))
    width = 0.8 / len(runs)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharex=True)
    panels = [("pixel F1 (threshold from the other cities)", lambda r, c: r["pixels"]["per_pair"][c]["f1"]),
              ("warning precision (detect, no classifier)", lambda r, c: r["warnings"][c]["warning_precision"]),
              ("object recall (detect, no classifier)", lambda r, c: r["warnings"][c]["object_recall"])]
    for ax, (title, value) in zip(axes, panels, strict=True):
        for k, run in enumerate(runs):
            vals = [value(everything[run], c) or 0.0 for c in cities]
            label = f"{run} ({everything[run]['radiometry']}), mean {np.mean(vals):.2f}"
            ax.bar(x + (k - (len(runs) - 1) / 2) * width, vals, width, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(x, cities, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("s2-rgbn, leave one city out: each city scored by the network that never saw it", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--figure", type=Path, help="Write the per-city bar chart here (PNG)")
    parser.add_argument("--from-json", type=Path, help="Only draw --figure from an earlier --json")
    args = parser.parse_args()
    if args.from_json:
        if not args.figure:
            parser.error("--from-json needs --figure")
        plot(json.loads(args.from_json.read_text(encoding="utf-8")), args.figure)
        return
    if not args.runs:
        parser.error("give the cross-validate run folders (or --from-json with --figure)")
    everything: dict[str, Any] = {}
    print("| run | " + " | ".join(["none", "gain", "standardize", "percentile", "relative"]) + " |")
    print("|---|---:|---:|---:|---:|---:|")
    cvs = {run: json.loads((run / "cv.json").read_text()) for run in args.runs}
    for run, cv in cvs.items():
        cells = [(f"**{v['mean_f1']:.3f}**" if m == cv["radiometry"] else f"{v['mean_f1']:.3f}")
                 for m, v in cv["methods"].items()]
        print(f"| {run.name} | " + " | ".join(cells) + " |", flush=True)
    for run, cv in cvs.items():
        chosen = cv["radiometry"]
        figs = cv["methods"][chosen]
        warn = fold_warnings(run, chosen, figs["per_pair"])
        everything[run.name] = {"radiometry": chosen, "pixels": figs, "warnings": warn}
        print(f"\n{run.name} (radiometry {chosen}; pooled threshold {figs['threshold']:.2f})\n")
        print("| held out | threshold | pixel P | pixel R | pixel F1 | warnings | warning precision | object recall |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for city, row in figs["per_pair"].items():
            w = warn[city]
            print(f"| {city} | {row['threshold']:.2f} | {row['precision']:.3f} | {row['recall']:.3f} | "
                  f"{row['f1']:.3f} | {w['warnings']} | {_f(w['warning_precision'])} | {_f(w['object_recall'])} |",
                  flush=True)
        n = len(figs["per_pair"])
        mean = {k: sum(warn[c][k] or 0.0 for c in warn) / n for k in ("warning_precision", "object_recall")}
        print(f"| **mean** | | | | {figs['mean_f1']:.3f} | {sum(w['warnings'] for w in warn.values())} | "
              f"{mean['warning_precision']:.3f} | {mean['object_recall']:.3f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(everything, indent=1, default=str), encoding="utf-8")
    if args.figure:
        plot(everything, args.figure)


if __name__ == "__main__":
    main()
