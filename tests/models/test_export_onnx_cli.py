"""``cspon-rs export-onnx CKPT OUT``: the export is checked against PyTorch and written 0644 (issue 25)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cspon_rs.errors import CheckpointError
from cspon_rs.models.card import ModelCard, Normalization
from cspon_rs.models.checkpoint import save_checkpoint
from cspon_rs.models.registry import create_model


def _tiny(folder: Path) -> Path:
    torch.manual_seed(0)
    kw = {"encoder_depth": 3, "decoder_channels": [16, 16, 8]}
    model = create_model("siam_unet_lite", in_channels=3, **kw)
    card = ModelCard(name="tiny", version="0", architecture="siam_unet_lite", init_kwargs=kw, bands=["R", "G", "B"],
                     normalization=Normalization(mean=[100.0] * 3, std=[50.0] * 3), tile_size=64)
    save_checkpoint(model, card, folder / "tiny")
    return folder / "tiny.safetensors"


def test_export_onnx_cli_matches_pytorch(tmp_path: Path) -> None:
    import onnxruntime as ort

    from cspon_rs.models.checkpoint import load_checkpoint

    ckpt = _tiny(tmp_path)
    out = tmp_path / "share" / "tiny.onnx"
    done = subprocess.run([sys.executable, "-m", "cspon_rs.cli", "export-onnx", str(ckpt), str(out), "--tile", "64"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "max |logit difference|" in done.stdout
    mask = os.umask(0)
    os.umask(mask)
    card = json.loads((tmp_path / "share" / "tiny.onnx.json").read_text())
    for f in (out, tmp_path / "share" / "tiny.onnx.json"):
        assert os.stat(f).st_mode & 0o777 == 0o666 & ~mask
    assert card["metrics"]["onnx_check"]["max_abs_logit_difference"] <= 1e-3
    assert card["onnx_export"]["precision"] == "fp32" and card["bands"] == ["R", "G", "B"]
    # the exported graph takes other window sizes too and agrees there as well
    x = np.random.default_rng(3).normal(0, 1, (1, 3, 96, 128)).astype(np.float32)
    got = ort.InferenceSession(str(out)).run(["logits"], {"before": x, "after": x[:, :, ::-1].copy()})[0]
    with torch.no_grad():
        want = load_checkpoint(ckpt).model(torch.from_numpy(x), torch.from_numpy(x[:, :, ::-1].copy())).numpy()
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_export_that_disagrees_is_not_kept(tmp_path: Path) -> None:
    from cspon_rs.models.onnx_export import export_checkpoint_onnx

    with pytest.raises(CheckpointError, match="differ by"):
        export_checkpoint_onnx(_tiny(tmp_path), tmp_path / "x.onnx", tile=64, atol=-1.0)
    assert not (tmp_path / "x.onnx").exists() and not list(tmp_path.glob("tmp*"))
