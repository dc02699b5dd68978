"""1 process vs 2 DDP processes (torchrun, gloo on the CPU) at the same effective batch and steps.

    .venv/bin/python benchmarks/ddp_compare.py --epochs 2 --crops 160

Same config for both: ``siam_unet_lite`` from random weights, 128 px crops, batch 8 (4 per process with two),
``crops / 8`` steps an epoch, on the three LEVIR-CD training crops in ``../shared/data``. The validation split of
this comparison is the LEVIR-CD validation crop plus the 7 demo test crops (more pixels than one crop: the figure
compares two ways of running the same training, it selects nothing). Prints both validation F1 (threshold picked
on the same pixels) and whether they agree within ``--tolerance``. One torch thread per process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEVIR = REPO.parent / "shared" / "data" / "LEVIR-CD"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--crops", type=int, default=160, help="Crops per epoch (steps = crops / 8)")
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    test = [x.rsplit(".", 1)[0] for x in (LEVIR / "list" / "demo.txt").read_text().split()]
    val = ["val_27_0000_0256", *test]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "ddp.yaml"
        cfg.write_text(
            f"""data:
  kind: levir
  root: {LEVIR}
  train: [train_36_0512_0512, train_386_0512_0768, train_412_0512_0768]
  val: {json.dumps(val)}
  label_threshold: 127
  crop_size: 128
  crops_per_epoch: {args.crops}
model:
  architecture: siam_unet_lite
  init_kwargs: {{encoder_depth: 4, decoder_channels: [64, 48, 32, 16], fusion: absdiff}}
optim: {{epochs: {args.epochs}, batch_size: 8, lr: 0.002, seed: 0, num_threads: 1}}
output: {{dir: {tmp}/run, name: ddp, version: "0"}}
""",
            encoding="utf-8",
        )
        for procs in (1, 2):
            out = Path(tmp) / f"p{procs}"
            launcher = (
                [sys.executable, "-m", "cspon_rs.training"]
                if procs == 1
                else [str(bin_dir / "torchrun"), "--standalone", "--nproc-per-node", str(procs), "-m",
                      "cspon_rs.training"]
            )
            t0 = time.time()
            done = subprocess.run([*launcher, "-c", str(cfg), "--out", str(out)], capture_output=True, text=True,
                                  env=env, timeout=900)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            history = json.loads((out / "history.json").read_text())
            results[procs] = {
                "processes": procs,
                "steps": sum(h["steps"] for h in history),
                "effective_batch": 8,
                "val_f1_best": round(history[-1]["val_f1_best"], 4),
                "val_threshold": history[-1]["val_threshold"],
                "train_loss": round(history[-1]["train_loss"], 4),
                "seconds": round(time.time() - t0, 1),
            }
            print(json.dumps(results[procs]), flush=True)
    diff = results[2]["val_f1_best"] - results[1]["val_f1_best"]
    print("\n| processes | steps | effective batch | validation F1 (last epoch) | wall s |\n|---:|---:|---:|---:|---:|")
    for r in results.values():
        print(f"| {r['processes']} | {r['steps']} | {r['effective_batch']} | {r['val_f1_best']:.3f} | {r['seconds']} |")
    verdict = "within" if abs(diff) <= args.tolerance else "OUTSIDE"
    print(f"\n2 processes - 1 process: {diff:+.3f} validation F1 ({verdict} +-{args.tolerance})")
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": list(results.values()), "difference": diff}, indent=2) + "\n")


if __name__ == "__main__":
    main()
