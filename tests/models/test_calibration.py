"""Temperature scaling, reliability/ECE, the card's temperature and where probabilities are made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from cspon_rs.inference.predictors import ModelPredictor
from cspon_rs.models.calibration import (
    ReliabilityBins,
    apply_temperature,
    calibrate_checkpoint,
    fit_temperature,
    probability_to_logit,
    reliability,
)
from cspon_rs.models.card import ModelCard, Normalization
from cspon_rs.models.checkpoint import default_checkpoint, load_card, load_checkpoint, predict_proba, save_checkpoint
from cspon_rs.models.registry import create_model
from cspon_rs.training.datasets import ChangePair

KW: dict[str, Any] = {"encoder_depth": 3, "decoder_channels": [16, 16, 8]}


def _sampled(t_true: float, n: int = 200_000, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from a known model p = sigmoid(z); the 'network' reports logits z * t_true."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 2.5, size=n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.uint8)
    return z * t_true, y


@pytest.mark.parametrize("t_true", [2.5, 0.5, 1.0])
def test_fit_temperature_recovers_known_temperature(t_true: float) -> None:
    logits, labels = _sampled(t_true)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(t_true, rel=0.04)


def test_fit_temperature_subsamples_deterministically_and_ignores_invalid() -> None:
    logits, labels = _sampled(2.0)
    valid = np.ones(logits.shape, dtype=bool)
    valid[:50_000] = False
    garbage = logits.copy()
    garbage[:50_000] = 40.0  # confidently wrong where invalid: must not matter
    labels_g = labels.copy()
    labels_g[:50_000] = 0
    full = fit_temperature(logits[50_000:], labels[50_000:])
    masked = fit_temperature(garbage, labels_g, valid)
    assert masked == pytest.approx(full, rel=1e-6)
    a = fit_temperature(logits, labels, max_pixels=40_000)
    b = fit_temperature(logits, labels, max_pixels=40_000)
    assert a == b and a == pytest.approx(2.0, rel=0.08)
    with pytest.raises(ValueError, match="no valid pixels"):
        fit_temperature(logits, labels, np.zeros(logits.shape, dtype=bool))


def test_apply_temperature_and_logit_roundtrip() -> None:
    z = np.array([-1000.0, -3.0, 0.0, 2.0, 1000.0])
    p = apply_temperature(z, 2.0)
    assert p.dtype == np.float32 and np.all(np.isfinite(p))
    np.testing.assert_allclose(p[1:4], 1.0 / (1.0 + np.exp(-z[1:4] / 2.0)), rtol=1e-6)
    assert p[0] == 0.0 and p[-1] == 1.0
    np.testing.assert_allclose(probability_to_logit(apply_temperature(z[1:4])), z[1:4], atol=1e-5)
    with pytest.raises(ValueError):
        apply_temperature(z, 0.0)


def test_reliability_hand_made_bins() -> None:
    prob = np.array([0.05] * 10 + [0.95] * 10)
    labels = np.array([1] + [0] * 9 + [1] * 5 + [0] * 5)
    rel = reliability(prob, labels, bins=10)
    assert rel.count.tolist() == [10, 0, 0, 0, 0, 0, 0, 0, 0, 10]
    assert rel.mean_predicted[0] == pytest.approx(0.05) and rel.observed[0] == pytest.approx(0.1)
    assert rel.mean_predicted[9] == pytest.approx(0.95) and rel.observed[9] == pytest.approx(0.5)
    assert np.isnan(rel.observed[3])
    assert rel.ece == pytest.approx((10 * 0.05 + 10 * 0.45) / 20)
    d = rel.as_dict()
    assert d["observed"][3] is None and d["count"][9] == 10
    json.dumps(d, allow_nan=False)
    # pooling two halves equals the whole; an invalid mask removes pixels
    acc = ReliabilityBins(10)
    acc.update(prob[:10], labels[:10])
    acc.update(prob[10:], labels[10:])
    assert acc.compute().ece == pytest.approx(rel.ece)
    valid = np.array([True] * 10 + [False] * 10)
    assert reliability(prob, labels, valid=valid).ece == pytest.approx(0.05)


def test_reliability_of_a_calibrated_model_is_small() -> None:
    logits, labels = _sampled(1.0)
    assert reliability(apply_temperature(logits), labels).ece < 0.01
    assert reliability(apply_temperature(logits * 3.0), labels).ece > 0.05


def test_card_without_temperature_loads_with_t1(tmp_path: Path) -> None:
    data = json.loads(default_checkpoint().with_suffix(".json").read_text(encoding="utf-8"))
    data.pop("temperature", None)
    card = ModelCard.model_validate(data)
    assert card.temperature == 1.0
    (tmp_path / "old.json").write_text(json.dumps(data), encoding="utf-8")
    assert load_card(tmp_path / "old.json").temperature == 1.0
    assert ModelCard.model_validate({**data, "temperature": 1.7}).temperature == 1.7
    with pytest.raises(ValidationError):
        ModelCard.model_validate({**data, "temperature": 0.0})


def _tiny_checkpoint(path: Path, temperature: float = 1.0) -> Path:
    torch.manual_seed(3)
    model = create_model("siam_unet_lite", in_channels=3, **KW)
    model.train()
    with torch.no_grad():  # BatchNorm statistics away from their defaults
        model(torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64))
    card = ModelCard(
        name="unit",
        version="1",
        architecture="siam_unet_lite",
        init_kwargs=dict(KW),
        bands=["R", "G", "B"],
        normalization=Normalization(mean=[100.0] * 3, std=[50.0] * 3),
        temperature=temperature,
        training_data={"test": ["held_out"]},
    )
    weights, _ = save_checkpoint(model.eval(), card, path)
    return weights


def test_probabilities_use_the_card_temperature(tmp_path: Path) -> None:
    weights = _tiny_checkpoint(tmp_path / "ck", temperature=2.0)
    loaded = load_checkpoint(weights)
    rng = np.random.default_rng(0)
    a = rng.normal(100, 50, size=(3, 40, 50)).astype(np.float32)
    b = rng.normal(100, 50, size=(3, 40, 50)).astype(np.float32)
    z = predict_proba(loaded, a, b, logits=True)
    p = predict_proba(loaded, a, b)
    np.testing.assert_allclose(p, apply_temperature(z, 2.0), atol=2e-6)
    np.testing.assert_allclose(predict_proba(loaded, a, b, temperature=1.0), apply_temperature(z, 1.0), atol=2e-6)
    # the inference predictor (windows of multiples of 32) applies the same temperature
    a64, b64 = a[:, :32, :32][None], b[:, :32, :32][None]
    pred = ModelPredictor(loaded)(a64, b64, np.ones((1, 32, 32), dtype=bool))
    z64 = predict_proba(loaded, a64[0], b64[0], logits=True)
    np.testing.assert_allclose(pred[0], apply_temperature(z64, 2.0), atol=2e-6)


def test_calibrate_checkpoint_fits_t_and_reselects_threshold(tmp_path: Path) -> None:
    weights = _tiny_checkpoint(tmp_path / "ck")
    rng = np.random.default_rng(1)
    pairs = []
    for k in range(2):
        a = rng.normal(100, 30, size=(3, 64, 64)).astype(np.float32)
        b = a + rng.normal(0, 3, size=a.shape).astype(np.float32)
        label = np.zeros((64, 64), dtype=np.uint8)
        label[10:30, 20:40] = 1
        b[:, 10:30, 20:40] += 120
        pairs.append(ChangePair(f"v{k}", a, b, label, np.ones((64, 64), dtype=bool), ["R", "G", "B"], "mem"))
    card = calibrate_checkpoint(weights, pairs)
    cal = card.metrics["calibration"]
    assert card.temperature == pytest.approx(cal["temperature"], rel=1e-5) and card.temperature > 0
    assert cal["pairs"] == ["v0", "v1"] and cal["pixels"] == 2 * 64 * 64
    assert card.threshold == cal["threshold"] and 0.05 <= card.threshold <= 0.95
    assert {"ece_before", "ece_after", "reliability_before", "reliability_after"} <= set(cal)
    # the fitted T minimises the NLL: it is no worse than T = 1 on the same pixels
    loaded = load_checkpoint(weights)
    z = np.concatenate([predict_proba(loaded, p.before, p.after, logits=True).ravel() for p in pairs])
    y = np.concatenate([p.label.ravel() for p in pairs]).astype(np.float64)

    def nll(t: float) -> float:
        return float(np.mean(np.logaddexp(0.0, z / t) - y * z / t))

    assert nll(card.temperature) <= nll(1.0) + 1e-9
    assert load_card(weights).temperature == 1.0  # nothing written
