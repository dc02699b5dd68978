"""Standard change-detection datasets by name, read from the layout their authors publish, official splits.

``cspon-rs train --dataset levir-cd --root DIR`` (or ``data: {kind: standard, dataset: levir-cd, root: DIR}``).

========== ============================================================ ========================= =========
name       layout under ``root``                                        splits                    labels
========== ============================================================ ========================= =========
levir-cd   ``{train,val,test}/{A,B,label}/*.png``                       train / val / test        0/255
levir-cd+  ``{train,test}/{A,B,label}/*.png``                           train / test              0/255
whu-cd     ``{train,val,test}/{A,B,label}/*.png`` (the 256 px tiles)    train / val / test        0/255
s2looking  ``{train,val,test}/{Image1,Image2,label}/*.png``             train / val / test        0/255
sysu-cd    ``{train,val,test}/{time1,time2,label}/*.png``               train / val / test        0/255
cdd        ``[Real/subset/]{train,val,test}/{A,B,OUT}/*.jpg``           train / val / test        JPEG: >127
dsifn      ``{train,val,test}/{t1,t2,mask}/*`` (test masks ``.tif``)    train / val / test        0/255
oscd       ``images/<city>/imgs_{1,2}_rect/B*.tif``, ``images/train.txt``, train / test (cities)     1/2
           ``test.txt``, ``train_labels/<city>/cm/``, ``test_labels/...``
========== ============================================================ ========================= =========

``oscd`` stacks B04, B03, B02, B08 (the shipped ``s2-rgbn`` bands); ``oscd-13`` all 13 bands (B01..B12, B8A),
20/60 m bands resampled onto the 10 m grid of B02. The authors' folder names ("Onera Satellite Change
Detection dataset - Images" / "- Train Labels" / "- Test Labels") are accepted as well. A split the authors
do not publish (LEVIR-CD+ and OSCD have no validation split) is empty: give ``val`` ids (taken from the train
split) to validate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cspon_rs.errors import ConfigError, LabelError, MissingFileError

__all__ = [
    "STANDARD_DATASETS",
    "StandardDataset",
    "config_from_dataset",
    "dataset_info",
    "load_standard",
    "standard_ids",
]

OSCD_13 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


@dataclass(frozen=True)
class StandardDataset:
    """How one dataset is laid out."""

    name: str
    splits: tuple[str, ...]
    dirs: tuple[str, str, str] = ("A", "B", "label")
    subdir: tuple[str, ...] = ()  # optional folders between root and the split folders (tried in order)
    label_threshold: int | None = None
    bands: tuple[str, ...] = ("R", "G", "B")
    pixel_size_m: float | None = None


STANDARD_DATASETS: dict[str, StandardDataset] = {
    d.name: d
    for d in (
        StandardDataset("levir-cd", ("train", "val", "test"), pixel_size_m=0.5),
        StandardDataset("levir-cd+", ("train", "test"), pixel_size_m=0.5),
        StandardDataset("whu-cd", ("train", "val", "test")),
        StandardDataset("s2looking", ("train", "val", "test"), ("Image1", "Image2", "label")),
        StandardDataset("sysu-cd", ("train", "val", "test"), ("time1", "time2", "label"), pixel_size_m=0.5),
        StandardDataset("cdd", ("train", "val", "test"), ("A", "B", "OUT"), ("Real/subset", "subset"), 127),
        StandardDataset("dsifn", ("train", "val", "test"), ("t1", "t2", "mask")),
        StandardDataset("oscd", ("train", "test"), bands=("B04", "B03", "B02", "B08"), pixel_size_m=10.0),
        StandardDataset("oscd-13", ("train", "test"), bands=tuple(OSCD_13), pixel_size_m=10.0),
    )
}


def dataset_info(name: str) -> StandardDataset:
    """The layout of a dataset by name (case-insensitive).

    Raises:
        ConfigError: Unknown name (the message lists the known ones).
    """
    key = name.lower()
    if key not in STANDARD_DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(STANDARD_DATASETS)}")
    return STANDARD_DATASETS[key]


def _base(info: StandardDataset, root: Path) -> Path:
    for sub in info.subdir:
        if (root / sub).is_dir():
            return root / sub
    return root


def _oscd_dirs(root: Path) -> tuple[Path, dict[str, Path]]:
    """``(images folder, {split: labels folder})`` of an OSCD download."""
    images = next(
        (root / n for n in ("images", "Onera Satellite Change Detection dataset - Images") if (root / n).is_dir()),
        None,
    )
    if images is None:
        raise MissingFileError(
            f"{root}: no OSCD images folder ('images' or 'Onera Satellite Change Detection dataset - Images')"
        )
    labels = {}
    for split, names in (
        ("train", ("train_labels", "Onera Satellite Change Detection dataset - Train Labels")),
        ("test", ("test_labels", "Onera Satellite Change Detection dataset - Test Labels")),
    ):
        found = next((root / n for n in names if (root / n).is_dir()), None)
        if found is not None:
            labels[split] = found
    return images, labels


def standard_ids(name: str, root: str | Path, split: str) -> list[str]:
    """The official ids of ``split`` (file stems, or OSCD cities); empty when the authors publish no such split.

    Raises:
        ConfigError: Unknown dataset or split.
        MissingFileError: The layout is not there.
    """
    info = dataset_info(name)
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be train, val or test, got {split!r}")
    if split not in info.splits:
        return []
    root = Path(root)
    if info.name.startswith("oscd"):
        images, _ = _oscd_dirs(root)
        listing = images / f"{split}.txt"
        if not listing.is_file():
            raise MissingFileError(f"{listing}: OSCD split list not found")
        return [c.strip() for c in listing.read_text(encoding="utf-8").replace("\n", ",").split(",") if c.strip()]
    from cspon_rs.training.datasets import levir_ids

    return levir_ids(_base(info, root) / split, info.dirs)


def _load_oscd_original(root: Path, split: str, cities: Sequence[str], bands: Sequence[str]) -> list[Any]:
    from cspon_rs.geo.raster import open_raster
    from cspon_rs.training.datasets import ChangePair, _read_image, _read_on_grid, decode_label

    images, labels = _oscd_dirs(root)
    if split not in labels:
        raise MissingFileError(f"{root}: no OSCD {split} labels folder ({split}_labels)")
    pairs = []
    for city in cities:
        dates = [images / city / "imgs_1_rect", images / city / "imgs_2_rect"]
        for d in dates:
            if not d.is_dir():
                raise MissingFileError(f"{d}: OSCD city folder not found")
        ref_path = dates[0] / "B02.tif"
        with open_raster(ref_path) as ref:
            stacks = [np.stack([_read_on_grid(d / f"{b}.tif", ref) for b in bands]) for d in dates]
            crs, transform = str(ref.crs), tuple(ref.transform)[:6]
        cm = labels[split] / city / "cm"
        label_path = next((p for p in (cm / f"{city}-cm.tif", cm / "cm.png") if p.is_file()), None)
        if label_path is None:
            raise MissingFileError(f"{cm}: no {city}-cm.tif or cm.png change map")
        lab = _read_image(label_path)[0]
        if lab.shape != stacks[0].shape[1:]:
            raise LabelError(f"{label_path}: label is {lab.shape} but {ref_path} is {stacks[0].shape[1:]}")
        label, labelled = decode_label(lab, label_path, allowed=({1, 2}, {0, 255}, {0, 1}), first_fit=True)
        valid = (stacks[0] > 0).any(axis=0) & (stacks[1] > 0).any(axis=0) & labelled
        pairs.append(ChangePair(city, stacks[0], stacks[1], label, valid, list(bands), str(dates[0]), crs, transform))
    return pairs


def load_standard(
    name: str, root: str | Path, split: str, ids: Sequence[str] | None = None, **coding: Any
) -> list[Any]:
    """Load ``split`` of a standard dataset (``ids`` restricts it; ids from another official split are refused).

    Args:
        name: Dataset name (see :data:`STANDARD_DATASETS`).
        root: The dataset folder as downloaded.
        split: ``train``, ``val`` or ``test``.
        ids: A subset of the official ids of ``split`` (default: all of them). For a ``val`` split the authors do
            not publish, ids are taken from their train split.
        coding: ``label_threshold`` / ``label_map`` / ``ignore_value`` overriding the dataset's own decoding.

    Raises:
        ConfigError: Unknown dataset, or ids not in the split (a test id in train is refused by name).
    """
    info = dataset_info(name)
    root = Path(root)
    where = split if split in info.splits else "train"
    official = standard_ids(name, root, where)
    if split not in info.splits and ids is None:
        return []
    chosen = list(ids) if ids is not None else official
    unknown = [i for i in chosen if i not in official]
    if unknown:
        raise ConfigError(f"{name} ({root}): ids {unknown[:5]} are not in its official {where} split")
    if not chosen:
        return []
    if info.name.startswith("oscd"):
        return _load_oscd_original(root, where, chosen, info.bands)
    from cspon_rs.training.datasets import load_levir

    if coding.get("label_threshold") is None and coding.get("label_map") is None:
        coding["label_threshold"] = info.label_threshold
    pairs = load_levir(_base(info, root) / where, chosen, dirs=info.dirs, **coding)
    for p in pairs:
        p.source = f"{name}:{where}"
    return pairs


def config_from_dataset(name: str, root: str | Path, sets: Sequence[str] = ()) -> Any:
    """A :class:`~cspon_rs.training.config.TrainConfig` training on a standard dataset with the pairs-CSV recipe
    (:data:`~cspon_rs.training.pairs_csv.PAIRS_DEFAULTS`), then ``--set`` items; ``output.dir`` defaults to
    ``runs/<name>`` in the current folder."""
    import copy

    from cspon_rs.training.config import train_config_from_dict
    from cspon_rs.training.pairs_csv import PAIRS_DEFAULTS

    info = dataset_info(name)
    raw = copy.deepcopy(PAIRS_DEFAULTS)
    raw["data"] = {**raw["data"], "kind": "standard", "dataset": info.name, "root": str(Path(root).resolve())}
    raw["output"] = {**raw["output"], "dir": str(Path("runs") / info.name), "name": f"{info.name}-change-model"}
    if info.pixel_size_m is not None:
        raw["pixel_size_m"] = info.pixel_size_m
    if info.name.startswith("oscd"):
        raw["model"]["normalization"] = "band_stats_half"
    return train_config_from_dict(raw, Path.cwd(), f"--dataset {name}", sets)
