"""Reproduce the accuracy table of benchmarks/accuracy.md.

Scores, on the held-out test pairs named in each shipped checkpoint's card, with the same evaluator on the
same valid pixels:

(a) the shipped checkpoint at its card threshold (chosen on the validation split),
(b) the spectral-index baseline (CVA + per-pair Otsu, ``models/baselines.py``),
(c) the same architecture with random (untrained, seeded) weights at threshold 0.5.

Usage (from the repository root)::

    PYTHONPATH=. .venv/bin/python benchmarks/accuracy.py [--data ../shared/data] [--out outputs/accuracy]
        [--update-card]

Prints a markdown table (pooled over the test pairs, then per pair); ``--update-card`` stores the baseline
scores next to the checkpoint's own test metrics in its JSON card.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cspon_rs.models.checkpoint import checkpoint_paths, default_checkpoint, load_card  # noqa: E402
from cspon_rs.training.datasets import load_levir, load_oscd  # noqa: E402
from cspon_rs.training.evaluate import EvalReport, evaluate  # noqa: E402

HEADER = (
    "| data (test pairs) | detector | threshold | precision | recall | F1 | IoU | kappa | object recall |"
)
RULE = "|---|---|---:|---:|---:|---:|---:|---:|---:|"


def _row(data: str, r: EvalReport) -> str:
    m = r.metrics
    return (
        f"| {data} | {r.detector} | {r.threshold:.2f} | {m.precision:.3f} | {m.recall:.3f} | **{m.f1:.3f}** | "
        f"{m.iou:.3f} | {m.kappa:.3f} | {m.objects_hit}/{m.objects} ({m.object_recall:.2f}) |"
    )


def _pairs_for(card_path: Path, data_root: Path) -> tuple[str, list]:  # type: ignore[type-arg]
    card = load_card(card_path)
    kind = card.training_data.get("kind")
    test_ids = list(card.training_data.get("test", []))
    if kind == "oscd":
        root = data_root / "OSCD" / "train_labelled"
        return f"OSCD {', '.join(test_ids)}", load_oscd(root, test_ids, card.bands)
    if kind == "levir":
        root = data_root / "LEVIR-CD"
        return f"LEVIR-CD {len(test_ids)} test crops", load_levir(root, test_ids)
    raise SystemExit(f"{card_path}: cannot find the test data of training kind {kind!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("CSPON_SHARED_DATA", REPO.parent / "shared" / "data")),
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        help="checkpoint(s) to score (default: every models/checkpoints/*.safetensors)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "accuracy")
    parser.add_argument("--update-card", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shipped = sorted((REPO / "models" / "checkpoints").glob("*.safetensors"))
    ckpts = args.checkpoint or shipped or [default_checkpoint()]
    lines = [HEADER, RULE]
    per_pair_lines = [
        "| pair | detector | precision | recall | F1 | IoU | kappa |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for ck in ckpts:
        t0 = time.time()
        label, pairs = _pairs_for(ck, args.data)
        name = checkpoint_paths(ck)[0].stem
        reports = [
            evaluate(ck, pairs, out_dir=args.out / name / "model", print_table=False),
            evaluate("spectral", pairs, out_dir=args.out / name / "spectral", print_table=False),
            evaluate("random", pairs, out_dir=args.out / name / "random", like=ck, print_table=False),
        ]
        for r in reports:
            lines.append(_row(label, r))
            for pid, m in r.per_pair.items():
                per_pair_lines.append(
                    f"| {pid} | {r.detector} | {m['precision']:.3f} | {m['recall']:.3f} | "
                    f"{m['f1']:.3f} | {m['iou']:.3f} | {m['kappa']:.3f} |"
                )
        print(f"[{name}: {len(pairs)} pairs scored in {time.time() - t0:.1f} s]", file=sys.stderr)
        if reports[0].metrics.f1 <= reports[1].metrics.f1:
            print(f"WARNING: {name} does not beat the spectral baseline on F1", file=sys.stderr)
        if args.update_card:
            _, card_path = checkpoint_paths(ck)
            data = json.loads(card_path.read_text(encoding="utf-8"))
            data.setdefault("metrics", {})["test_comparison"] = {
                r.detector: {
                    k: round(v, 4) if isinstance(v, float) else v for k, v in r.metrics.as_dict().items()
                }
                for r in reports
            }
            tmp = card_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, card_path)
            load_card(card_path)  # still a valid card
    print("\n".join(lines))
    print()
    print("\n".join(per_pair_lines))


if __name__ == "__main__":
    main()
