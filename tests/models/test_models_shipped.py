"""The two shipped checkpoints load, name their splits, pick themselves for 'default', and beat the baselines
on their own held-out test data (OSCD Hong Kong for s2-rgbn, LEVIR-CD test crops for rgb)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cspon_rs.errors import BandMismatchError
from cspon_rs.models.checkpoint import (
    SHIPPED,
    default_checkpoint,
    load_checkpoint,
    pick_default,
    resolve_checkpoint,
    shipped_checkpoint,
)

S2_BANDS = ["B04", "B03", "B02", "B08"]


def _shared(repo_root: Path) -> Path:
    return Path(os.environ.get("CSPON_SHARED_DATA", repo_root.parent / "shared" / "data"))


def _hongkong_pairs(sample: Path, shared: Path) -> list:  # type: ignore[type-arg]
    from cspon_rs.training.datasets import load_oscd, load_pair_folder

    if (sample / "label.tif").is_file() and sorted(sample.glob("before*.tif")):
        return [load_pair_folder(sample, S2_BANDS)]
    oscd = shared / "OSCD" / "train_labelled"
    if (oscd / "A" / "hongkong").is_dir():
        return load_oscd(oscd, ["hongkong"], S2_BANDS)
    pytest.skip(f"Hong Kong data not found in {sample} nor {oscd}")


@pytest.mark.parametrize(
    ("name", "bands", "test_id", "gsd"),
    [("s2-rgbn", S2_BANDS, "hongkong", 10.0), ("rgb", ["R", "G", "B"], "test_2_0000_0000", 0.5)],
)
def test_shipped_checkpoint_card(name: str, bands: list[str], test_id: str, gsd: float) -> None:
    path = shipped_checkpoint(name)
    assert path.stat().st_size < 10 * 1024 * 1024  # float16 weights
    card = load_checkpoint(path, expected_bands=bands).card
    assert test_id in card.metrics["test"]["pairs"]
    assert test_id not in card.training_data["train"] + card.training_data["val"]
    assert card.pixel_size_m == gsd and card.temperature > 0
    assert "ImageNet" in card.training_data["encoder_init"]["encoder_weights"]
    assert "calibration" in card.metrics


def test_default_picks_by_bands() -> None:
    assert pick_default(["B04", "B03", "B02", "B08"])[0] == "s2-rgbn"
    assert pick_default(["R", "G", "NIR"])[0] == "s2-rgbn"
    assert pick_default(4)[0] == "s2-rgbn"
    assert pick_default(3)[0] == "rgb"
    assert default_checkpoint(3) == shipped_checkpoint("rgb")
    assert resolve_checkpoint("rgb") == shipped_checkpoint("rgb").resolve()
    assert resolve_checkpoint("default") == default_checkpoint().resolve() == shipped_checkpoint("s2-rgbn").resolve()
    with pytest.raises(BandMismatchError, match="13 bands.*--checkpoint rgb"):
        pick_default(13)
    with pytest.raises(ValueError, match="shipped"):
        shipped_checkpoint("nope")
    assert set(SHIPPED) == {"rgb", "s2-rgbn"}


def test_s2_rgbn_beats_baselines_on_hongkong(repo_root: Path) -> None:
    from cspon_rs.training.evaluate import evaluate

    pairs = _hongkong_pairs(repo_root / "data_samples" / "hongkong", _shared(repo_root))
    model = evaluate(shipped_checkpoint("s2-rgbn"), pairs, print_table=False)
    spectral = evaluate("spectral", pairs, print_table=False)
    change = float(np.mean([p.label[p.valid].mean() for p in pairs]))
    assert model.metrics.f1 > spectral.metrics.f1, (model.metrics, spectral.metrics)
    assert model.metrics.f1 > 2 * change / (1 + change)  # flag-every-pixel F1


def test_rgb_beats_baselines_on_levir_test(repo_root: Path) -> None:
    from cspon_rs.training.datasets import load_levir
    from cspon_rs.training.evaluate import evaluate

    levir = _shared(repo_root) / "LEVIR-CD"
    if not (levir / "A").is_dir():
        pytest.skip(f"LEVIR-CD not found in {levir}")
    ids = [line.strip().removesuffix(".png") for line in (levir / "list" / "demo.txt").read_text().splitlines()]
    pairs = load_levir(levir, [i for i in ids if i][:3])
    model = evaluate(shipped_checkpoint("rgb"), pairs, print_table=False)
    spectral = evaluate("spectral", pairs, print_table=False)
    change = float(np.mean([p.label.mean() for p in pairs]))
    assert model.metrics.f1 > max(spectral.metrics.f1, 2 * change / (1 + change)) + 0.1
