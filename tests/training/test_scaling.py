"""Training past one process and one budget (issue 25): torchrun DDP on the CPU, wall-clock budget, early
stopping, CSV and TensorBoard logs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from trainingtest_support import write_tiny_config

from cspon_rs.training.config import load_train_config
from cspon_rs.training.loop import train


def _config(levir_dir: Path, tmp_path: Path, *, crops: int = 4, epochs: int = 1, extra: str = "") -> Path:
    data = f"""data:
  kind: levir
  root: {levir_dir}
  train: list/train.txt
  val: list/val.txt
  test: list/test.txt
  crop_size: 64
  crops_per_epoch: {crops}"""
    return write_tiny_config(tmp_path / "cfg.yaml", data, tmp_path / "run", epochs=epochs, extra_optim=extra)


def test_wall_clock_budget_stops_inside_the_epoch(levir_dir: Path, tmp_path: Path) -> None:
    cfg = load_train_config(_config(levir_dir, tmp_path, crops=400, epochs=3, extra=", max_minutes: 0.0001"))
    result = train(cfg, progress=False)
    assert len(result.history) == 1 and result.history[0]["steps"] == 1  # not 200 steps, not 3 epochs
    assert "time budget" in result.history[0]["stopped"]
    assert result.checkpoint.is_file() and result.test_metrics  # validated, saved and scored all the same


def test_early_stopping_and_logs(levir_dir: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    # a validation pair without change: F1 is 0 in every epoch, so no epoch after the first is better
    val = (levir_dir / "list" / "val.txt").read_text().split()[0]
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(levir_dir / "label" / val)
    cfg = load_train_config(_config(levir_dir, tmp_path, epochs=6, extra=", patience: 2"))
    result = train(cfg, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3] and "early stopping" in result.history[-1]["stopped"]
    with (tmp_path / "run" / "log.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"train_loss", "lr", "val_f1", "val_f1_best", "val_threshold", "seconds"} <= set(rows[0])
    pytest.importorskip("tensorboard", reason="TensorBoard events need the tensorboard package (test extra)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    scalars = acc.Scalars("val_f1_best")
    assert [s.step for s in scalars] == [1, 2, 3]
    assert scalars[0].value == pytest.approx(float(rows[0]["val_f1_best"]), abs=1e-6)


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_torchrun_two_processes_on_cpu(levir_dir: Path, tmp_path: Path) -> None:
    """The same config in 1 and 2 processes (gloo): same batches and steps, files written once, close scores."""
    cfg = _config(levir_dir, tmp_path, crops=16, epochs=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train(load_train_config(cfg), out_dir=tmp_path / "one", progress=False)  # one process, in this one
    torchrun = str(Path(sys.executable).parent / "torchrun")
    two = subprocess.run([torchrun, "--nproc-per-node", "2", "--standalone", "-m", "cspon_rs.training",
                          "-c", str(cfg), "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "history.json").read_text())
    assert [h["steps"] for h in h1] == [h["steps"] for h in h2] == [8, 8]
    assert two.stdout.count("checkpoint:") == 1  # process 0 alone reports and writes
    for a, b in zip(h1, h2, strict=True):  # half batches per process, gradients averaged: close, not equal
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.25)
    assert abs(h2[-1]["val_f1_best"] - h1[-1]["val_f1_best"]) < 0.2


def test_batch_that_does_not_split_over_processes_is_refused(levir_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from cspon_rs.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_train_config(_config(levir_dir, tmp_path))
    cfg.optim.batch_size = 3
    with pytest.raises(ConfigError, match="multiple of the 2 processes"):
        train(cfg, progress=False)
