"""Training end to end (CLI and Python), resume == uninterrupted, fine-tuning, bad configs, NaN loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from trainingtest_support import cli_app, write_tiny_config
from typer.testing import CliRunner

from cspon_rs.errors import ConfigError, TrainingError
from cspon_rs.models.checkpoint import load_checkpoint
from cspon_rs.training.config import load_train_config
from cspon_rs.training.loop import train


def test_cli_train_levir_end_to_end(levir_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_run"
    result = CliRunner().invoke(cli_app(), ["train", "--config", str(levir_config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "checkpoint:" in result.output
    for name in ("best.safetensors", "best.json", "last.pt", "best.pt", "history.json", "curves.png"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"]) and "val_f1" in history[0]
    loaded = load_checkpoint(out / "best")
    assert loaded.card.bands == ["R", "G", "B"]
    assert loaded.card.input is not None and loaded.card.input.dtype == "uint8"
    assert loaded.card.training_data["train"] == ["pair_0", "pair_1", "pair_2", "pair_3"]
    assert loaded.card.training_data["test"] == ["pair_5"]
    assert "test" in loaded.card.metrics and "val" in loaded.card.metrics

    # evaluate the fresh checkpoint and the spectral baseline through the CLI
    ev = tmp_path / "eval"
    data = str(levir_config.parent / "levir")
    result = CliRunner().invoke(
        cli_app(),
        ["evaluate", "--checkpoint", str(out / "best.safetensors"), "--data", data, "--out", str(ev),
         "--pixel-size", "0.5"],  # LEVIR PNGs carry no georeference
    )
    assert result.exit_code == 0, result.output
    report = json.loads((ev / "report.json").read_text())
    assert len(report["per_pair"]) == 6 and (ev / "pair_0.png").is_file()
    result = CliRunner().invoke(
        cli_app(),
        [
            "evaluate",
            "--checkpoint",
            "spectral",
            "--data",
            data,
            "--like",
            str(out / "best"),
            "--out",
            str(tmp_path / "ev_spec"),
            "--ids",
            "pair_0,pair_1",
            "--pixel-size",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "ev_spec" / "report.json").read_text())
    # synthetic changes are bright blocks on a dark texture: CVA finds most of them
    assert spec["metrics"]["recall"] > 0.5


def test_train_geotiff_pairs_with_gpkg_labels(geotiff_dataset: Path, tmp_path: Path) -> None:
    data = f"""data:
  kind: geotiff_pairs
  root: {geotiff_dataset}
  bands: [B04, B03, B02, B08]
  pairs:
    - {{id: p0, before: p0_before.tif, after: p0_after.tif, label_vector: p0_changes.gpkg, label_layer: changes}}
    - {{id: p1, before: p1_before.tif, after: p1_after.tif, label_vector: p1_changes.gpkg}}
  train: [p0]
  val: [p1]
  crop_size: 64
  crops_per_epoch: 4"""
    cfg_path = write_tiny_config(tmp_path / "train_tif.yaml", data, tmp_path / "run_tif")
    result = CliRunner().invoke(cli_app(), ["train", "--config", str(cfg_path)])
    assert result.exit_code == 0, result.output
    card = load_checkpoint(tmp_path / "run_tif" / "best").card
    assert card.bands == ["B04", "B03", "B02", "B08"]
    assert card.normalization.mean[0] > 100  # uint16-scaled stats from the train split
    # the card records the 16-bit range it was trained on, so detect maps any scene to it (#25 item 3)
    assert card.input is not None and card.input.dtype == "uint16" and card.input.radiometry == "gain"
    assert [b.band for b in card.input.band_stats] == card.bands
    assert card.input.value(50.0)[0] > 100


def test_resume_matches_uninterrupted(levir_config: Path, tmp_path: Path) -> None:
    cfg = load_train_config(levir_config)
    cfg.optim.epochs = 2
    full = train(cfg, out_dir=tmp_path / "full", progress=False)
    part = train(cfg, out_dir=tmp_path / "part", progress=False, max_epochs=1)
    assert len(part.history) == 1
    resumed = train(cfg, out_dir=tmp_path / "part", resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    s_full = torch.load(tmp_path / "full" / "last.pt", weights_only=False)["model"]
    s_res = torch.load(tmp_path / "part" / "last.pt", weights_only=False)["model"]
    for key, value in s_full.items():
        torch.testing.assert_close(s_res[key], value, rtol=1e-5, atol=1e-6)
    assert resumed.history[1]["train_loss"] == pytest.approx(full.history[1]["train_loss"], rel=1e-5)
    assert resumed.history[1]["val_f1_best"] == pytest.approx(full.history[1]["val_f1_best"], abs=1e-6)
    w_full = load_file(str(full.checkpoint))
    w_res = load_file(str(resumed.checkpoint))
    assert all(torch.allclose(w_full[k].float(), w_res[k].float(), atol=1e-3) for k in w_full)


def test_fine_tune_from_checkpoint(levir_config: Path, tmp_path: Path) -> None:
    first = train(load_train_config(levir_config), out_dir=tmp_path / "a", progress=False)
    cfg = load_train_config(levir_config)
    cfg.model.init_kwargs = {}  # ignored: architecture comes from the checkpoint being fine-tuned
    tuned = train(cfg, out_dir=tmp_path / "b", init_from=first.checkpoint, progress=False)
    card = load_checkpoint(tuned.checkpoint).card
    assert card.init_kwargs == load_checkpoint(first.checkpoint).card.init_kwargs
    assert card.normalization == load_checkpoint(first.checkpoint).card.normalization
    assert card.training_data["init_from"] == str(first.checkpoint)


def test_unknown_config_key_is_named(levir_config: Path) -> None:
    text = levir_config.read_text().replace("crop_size: 64", "crop_size: 64\n  crop_szie: 32")
    levir_config.write_text(text)
    with pytest.raises(ConfigError, match="crop_szie"):
        load_train_config(levir_config)
    result = CliRunner().invoke(cli_app(), ["train", "--config", str(levir_config)])
    assert result.exit_code != 0 and "crop_szie" in str(result.exception)


def test_nan_loss_names_the_step(levir_dir: Path, tmp_path: Path) -> None:
    data = f"""data:
  kind: levir
  root: {levir_dir}
  crop_size: 64
  crops_per_epoch: 16"""
    cfg_path = write_tiny_config(
        tmp_path / "nan.yaml", data, tmp_path / "nan_run", extra_optim=", lr: 1.0e+30"
    )
    text = cfg_path.read_text().replace("lr: 0.001, ", "")
    cfg_path.write_text(text)
    with pytest.raises(TrainingError, match=r"epoch 1, step \d+"):
        train(load_train_config(cfg_path), progress=False)
