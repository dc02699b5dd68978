"""The shipped checkpoint loads and beats the spectral baseline on Hong Kong (held out from training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cspon_rs.models.checkpoint import default_checkpoint, load_checkpoint


def _hongkong_pairs(sample: Path, shared: Path) -> list:  # type: ignore[type-arg]
    from cspon_rs.training.datasets import load_oscd, load_pair_folder

    if (sample / "label.tif").is_file() and sorted(sample.glob("before*.tif")):
        return [load_pair_folder(sample, ["B04", "B03", "B02", "B08"])]
    oscd = shared / "OSCD" / "train_labelled"
    if (oscd / "A" / "hongkong").is_dir():
        return load_oscd(oscd, ["hongkong"], ["B04", "B03", "B02", "B08"])
    pytest.skip(f"Hong Kong data not found in {sample} nor {oscd}")


def test_shipped_checkpoint_card() -> None:
    path = default_checkpoint()
    if not path.is_file():
        pytest.skip(f"shipped checkpoint not built yet: {path}")
    assert path.stat().st_size < 5 * 1024 * 1024
    loaded = load_checkpoint(path, expected_bands=["B04", "B03", "B02", "B08"])
    card = loaded.card
    assert "hongkong" in card.training_data["test"]
    assert "hongkong" not in card.training_data["train"] + card.training_data["val"]
    assert card.pixel_size_m == 10.0 and "test" in card.metrics


def test_shipped_checkpoint_beats_spectral_on_hongkong(repo_root: Path) -> None:
    import os

    from cspon_rs.training.evaluate import evaluate

    path = default_checkpoint()
    if not path.is_file():
        pytest.skip(f"shipped checkpoint not built yet: {path}")
    shared = Path(os.environ.get("CSPON_SHARED_DATA", repo_root.parent / "shared" / "data"))
    pairs = _hongkong_pairs(repo_root / "data_samples" / "hongkong", shared)
    model = evaluate(path, pairs, print_table=False)
    spectral = evaluate("spectral", pairs, print_table=False)
    assert model.metrics.f1 > spectral.metrics.f1, (model.metrics, spectral.metrics)
