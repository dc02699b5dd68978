"""Checkpoint save/load roundtrip, rebuild from the card, band checks, missing files, predict_proba."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cspon_rs.errors import BandMismatchError, CheckpointError, MissingFileError
from cspon_rs.models.card import ModelCard, Normalization
from cspon_rs.models.checkpoint import load_checkpoint, predict_proba, save_checkpoint
from cspon_rs.models.registry import create_model

KW = {"encoder_depth": 3, "decoder_channels": [24, 16, 8]}


def _card(bands: list[str], **kw: object) -> ModelCard:
    return ModelCard(
        name="unit",
        version="1",
        architecture="siam_unet_lite",
        init_kwargs=dict(KW),
        bands=bands,
        normalization=Normalization(mean=[100.0] * len(bands), std=[50.0] * len(bands)),
        **kw,
    )


def _trained_like_model(bands: int) -> torch.nn.Module:
    torch.manual_seed(1)
    model = create_model("siam_unet_lite", in_channels=bands, **KW)
    model.train()
    with torch.no_grad():  # move BatchNorm running stats away from their defaults
        model(torch.randn(4, bands, 64, 64), torch.randn(4, bands, 64, 64))
    return model.eval()


def test_roundtrip_identical_outputs(tmp_path: Path) -> None:
    model = _trained_like_model(4)
    card = _card(["B04", "B03", "B02", "B08"], threshold=0.35)
    w, c = save_checkpoint(model, card, tmp_path / "ck")
    assert w.name == "ck.safetensors" and c.name == "ck.json"
    loaded = load_checkpoint(tmp_path / "ck.safetensors")
    assert not loaded.model.training
    assert loaded.card == card
    x, y = torch.randn(1, 4, 64, 64), torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x, y), loaded.model(x, y))


def test_half_precision_export_loads_close(tmp_path: Path) -> None:
    model = _trained_like_model(3)
    save_checkpoint(model, _card(["R", "G", "B"]), tmp_path / "half", half=True)
    full_size = sum(p.numel() * 4 for p in model.state_dict().values() if p.is_floating_point())
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * full_size
    loaded = load_checkpoint(tmp_path / "half")
    x, y = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        p0, p1 = torch.sigmoid(model(x, y)), torch.sigmoid(loaded.model(x, y))
    assert loaded.model.head.weight.dtype == torch.float32
    assert torch.allclose(p0, p1, atol=2e-2)


def test_rebuilds_from_card_not_defaults(tmp_path: Path) -> None:
    model = _trained_like_model(3)
    save_checkpoint(model, _card(["R", "G", "B"]), tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck")
    # the card's decoder differs from the registry default (64, 48, 32, 16); loading used the card
    assert loaded.model.head.in_channels == 8
    card = json.loads((tmp_path / "ck.json").read_text())
    card["init_kwargs"] = {}
    (tmp_path / "ck.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "ck")


def test_band_mismatch_names_bands(tmp_path: Path) -> None:
    save_checkpoint(_trained_like_model(4), _card(["B04", "B03", "B02", "B08"]), tmp_path / "ck")
    with pytest.raises(BandMismatchError) as err:
        load_checkpoint(tmp_path / "ck", expected_bands=["B02", "B03", "B04", "B08"])
    msg = str(err.value)
    assert "['B02', 'B03', 'B04', 'B08']" in msg and "['B04', 'B03', 'B02', 'B08']" in msg
    with pytest.raises(BandMismatchError, match="has 3 bands .* expects 4 bands"):
        load_checkpoint(tmp_path / "ck", expected_bands=3)
    loaded = load_checkpoint(tmp_path / "ck", expected_bands=["b04", "b03", "b02", "b08"])
    with pytest.raises(BandMismatchError, match="3 bands"):
        predict_proba(loaded, np.zeros((3, 40, 40)), np.zeros((3, 40, 40)))


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="weights not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    save_checkpoint(_trained_like_model(3), _card(["R", "G", "B"]), tmp_path / "ck")
    (tmp_path / "ck.json").unlink()
    with pytest.raises(MissingFileError, match="model card not found"):
        load_checkpoint(tmp_path / "ck")


def test_predict_proba_pads_and_normalises(tmp_path: Path) -> None:
    model = _trained_like_model(3)
    save_checkpoint(model, _card(["R", "G", "B"]), tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck")
    rng = np.random.default_rng(0)
    before = rng.uniform(0, 255, size=(3, 50, 70)).astype(np.uint8)
    after = rng.uniform(0, 255, size=(3, 50, 70)).astype(np.uint8)
    prob = predict_proba(loaded, before, after)
    assert prob.shape == (50, 70) and prob.dtype == np.float32
    assert ((prob >= 0) & (prob <= 1)).all()
    # same as running the model by hand on the normalised, padded (64 x 96) input
    a = np.pad((before - 100.0) / 50.0, ((0, 0), (0, 14), (0, 26)), mode="reflect").astype(np.float32)
    b = np.pad((after - 100.0) / 50.0, ((0, 0), (0, 14), (0, 26)), mode="reflect").astype(np.float32)
    with torch.no_grad():
        ref = torch.sigmoid(model(torch.from_numpy(a)[None], torch.from_numpy(b)[None]))[
            0, 0, :50, :70
        ].numpy()
    np.testing.assert_allclose(prob, ref, atol=1e-5)
