"""The registry's new architectures (issue 25): each trains, is saved with its card and predicts again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from trainingtest_support import write_tiny_config

from cspon_rs.models.checkpoint import load_checkpoint, predict_proba
from cspon_rs.models.registry import create_model, model_names
from cspon_rs.training.config import load_train_config
from cspon_rs.training.loop import train

NEW = ["siam_unetpp", "siam_fpn", "siam_deeplabv3plus", "siam_upernet", "tinycd"]


@pytest.mark.parametrize("name", NEW)
def test_new_architecture_smoke_train_and_card(name: str, levir_dir: Path, tmp_path: Path) -> None:
    assert name in model_names()
    data = f"""data:
  kind: levir
  root: {levir_dir}
  train: list/train.txt
  val: list/val.txt
  crop_size: 64
  crops_per_epoch: 4"""
    cfg = load_train_config(write_tiny_config(tmp_path / "c.yaml", data, tmp_path / "run"))
    cfg.model.architecture = name
    cfg.model.init_kwargs = {"encoder_name": "mobilenet_v2"} if name != "tinycd" else {}
    cfg.model.pretrained = name == "tinycd"  # the offline EfficientNet-Lite0 weights
    result = train(cfg, progress=False)
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.card.architecture == name and type(loaded.model).__name__ in ("SiamSmp", "TinyCD")
    a = np.random.default_rng(0).uniform(0, 255, (3, 64, 64)).astype(np.float32)
    prob = predict_proba(loaded, a, a)
    assert prob.shape == (64, 64) and np.isfinite(prob).all()



def test_tinycd_mixing_block_pairs_each_channel_with_its_twin() -> None:
    from cspon_rs.models.tinycd import MixingBlock

    block = MixingBlock(4)
    a, b = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        base = block.conv(torch.stack([a, b], dim=2).reshape(1, 8, 8, 8))
        b2 = b.clone()
        b2[:, 1] += 5.0  # changing channel 1 of date 2 changes only output channel 1 (one group per pair)
        moved = block.conv(torch.stack([a, b2], dim=2).reshape(1, 8, 8, 8))
    changed = (moved - base).abs().amax(dim=(0, 2, 3)) > 1e-6
    assert changed.tolist() == [False, True, False, False]


def test_smp_decoders_refuse_concat_fusion() -> None:
    with pytest.raises(ValueError, match="absdiff"):
        create_model("siam_fpn", in_channels=3, encoder_name="mobilenet_v2", fusion="concat")
