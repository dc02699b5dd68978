"""Compare every registry architecture on one short recipe: parameters, MACs, CPU throughput, test F1.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/models.py --steps 30 --json benchmarks/models_results.json

The recipe is the same for every architecture and deliberately short (the CPU budget of a shared machine):
``--steps`` AdamW steps of 8 crops of 128 px from the three LEVIR-CD training crops in ``../shared/data``
(512 px each), lr 1e-3 (encoder x 0.2), ImageNet EfficientNet-Lite0 encoders where the architecture takes one
(``siam_unet_lite`` and ``early_fusion_unet`` start from random weights), threshold picked on the LEVIR-CD
validation crop, then F1 on the 7 LEVIR-CD test crops and, zero-shot, on DSIFN-CD 1_1 + 5_3. MACs are counted
by ``torch.utils.flop_counter.FlopCounterMode`` for one 256 x 256 pair (3 bands); CPU Mpx/s is the forward pass
on 1 thread, batch 1, 256 px windows (median of 5 after a warm-up).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
EFFL0 = {"encoder_name": "tu-tf_efficientnet_lite0"}
ARCHS: dict[str, tuple[dict[str, Any], bool]] = {
    "siam_unet": ({**EFFL0, "encoder_depth": 4, "decoder_channels": [64, 48, 32, 16], "fusion": "absdiff"}, True),
    "siam_unet_lite": ({"encoder_depth": 4, "decoder_channels": [64, 48, 32, 16], "fusion": "absdiff"}, False),
    "early_fusion_unet": ({"encoder_name": "resnet18"}, False),
    "siam_unetpp": ({**EFFL0, "encoder_depth": 4, "decoder_channels": [64, 48, 32, 16]}, True),
    "siam_fpn": (dict(EFFL0), True),
    "siam_deeplabv3plus": (dict(EFFL0), True),
    "siam_upernet": (dict(EFFL0), True),
    "tinycd": ({}, True),
}


def macs(model: torch.nn.Module, channels: int = 3, size: int = 256) -> float:
    """Multiply-accumulates of one forward pass of a ``size`` px pair (FlopCounterMode counts 2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, channels, size, size)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, x)
    return float(counter.get_total_flops()) / 2


def used_params(model: torch.nn.Module, channels: int = 3) -> int:
    """Parameters that take part in a forward pass (smp keeps unused later stages of some timm encoders)."""
    model.train()
    x = torch.randn(2, channels, 64, 64)
    model.zero_grad(set_to_none=True)
    model(x, x * 0.5).sum().backward()
    n = sum(p.numel() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    return n


def mpx_per_s(model: torch.nn.Module, channels: int = 3, size: int = 256, reps: int = 5) -> float:
    """Forward-pass throughput on the CPU (megapixels of change map per second)."""
    x = torch.randn(1, channels, size, size)
    model.eval()
    times = []
    with torch.no_grad():
        model(x, x)
        for _ in range(reps):
            t0 = time.perf_counter()
            model(x, x)
            times.append(time.perf_counter() - t0)
    return size * size / float(np.median(times)) / 1e6


def short_recipe(name: str, kwargs: dict[str, Any], pretrained: bool, steps: int, out: Path) -> dict[str, Any]:
    """Train ``name`` on the short LEVIR-CD recipe; F1 on LEVIR-CD test and DSIFN-CD (zero-shot)."""
    from cspon_rs.training.config import TrainConfig
    from cspon_rs.training.datasets import load_levir
    from cspon_rs.training.evaluate import evaluate_pairs, model_proba
    from cspon_rs.training.loop import train

    levir = DATA / "LEVIR-CD"
    cfg = TrainConfig.model_validate(
        {
            "data": {
                "kind": "levir",
                "root": str(levir),
                "train": ["train_36_0512_0512", "train_386_0512_0768", "train_412_0512_0768"],
                "val": ["val_27_0000_0256"],
                "crop_size": 128,
                "crops_per_epoch": 8 * steps,
                "label_threshold": 127,
            },
            "model": {
                "architecture": name,
                "init_kwargs": kwargs,
                "pretrained": pretrained,
                "normalization": "imagenet_8bit" if pretrained else "band_stats",
            },
            "optim": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "encoder_lr_factor": 0.2 if pretrained else 1.0,
                      "freeze_encoder_bn": pretrained, "seed": 0, "num_threads": 1},
            "output": {"dir": str(out / name), "name": name, "version": "bench"},
            "pixel_size_m": 0.5,
        }
    )
    t0 = time.time()
    result = train(cfg, progress=False)
    seconds = time.time() - t0
    from cspon_rs.models.checkpoint import load_checkpoint

    best = load_checkpoint(result.checkpoint)
    scores = {}
    test_ids = (levir / "list" / "demo.txt").read_text().split()
    for label, root, ids in (
        ("levir_test_f1", levir, [i.rsplit(".", 1)[0] for i in test_ids]),
        ("dsifn_test_f1", DATA / "DSIFN-CD", ["1_1", "5_3"]),
    ):
        pairs = load_levir(root, ids, label_threshold=127)
        probs = [model_proba(best.model, best.card, p.before, p.after) for p in pairs]
        scores[label] = round(evaluate_pairs(probs, pairs, threshold=best.card.threshold).f1, 3)
    return {"train_seconds": round(seconds, 1), "threshold": best.card.threshold, **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/cspon_models_bench"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-train", action="store_true", help="Only parameters, MACs and throughput")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from cspon_rs.models.registry import create_model

    rows = []
    for name in args.archs.split(","):
        kwargs, pretrained = ARCHS[name]
        torch.manual_seed(0)
        model = create_model(name, in_channels=3, **kwargs)
        row: dict[str, Any] = {
            "architecture": name,
            "init_kwargs": kwargs,
            "imagenet_encoder": pretrained,
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "params_used_m": round(used_params(model) / 1e6, 2),
            "gmacs_256": round(macs(model) / 1e9, 2),
            "cpu_mpx_s": round(mpx_per_s(model), 3),
        }
        if not args.no_train:
            row.update(short_recipe(name, kwargs, pretrained, args.steps, args.out))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| architecture | params used (M) | GMACs (256 px pair) | CPU Mpx/s (1 thread) | LEVIR-CD test F1 | "
          "DSIFN-CD F1 (zero-shot) |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| `{r['architecture']}` | {r['params_used_m']} | {r['gmacs_256']} | {r['cpu_mpx_s']} | "
              f"{r.get('levir_test_f1', '-')} | {r.get('dsifn_test_f1', '-')} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
