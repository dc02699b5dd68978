"""``cspon-rs dataset init DIR``: find the GeoTIFF pairs in a folder, split them, write ``pairs.csv`` + a config.

Layouts found (date-1 / date-2 / optional label, same names):

* folders ``before/ after/ [label/]`` or ``A/ B/ [label/]`` (also ``t1/ t2/``, ``pre/ post/``);
* files ``<id>_before.tif`` + ``<id>_after.tif`` (also ``_t1/_t2``, ``_pre/_post``, ``_A/_B``) with an optional
  ``<id>_label.tif`` / ``<id>_label.gpkg`` / ``<id>_changes.gpkg``;
* one folder per pair holding ``before*.tif``, ``after*.tif`` and ``label.*``.

``--labels FILE`` (change polygons, any CRS) labels every pair instead.

Splits (``split``):

* ``pairs``: whole pairs go to train / val / test at random (seeded);
* ``random``: every scene is cut into ``window`` px blocks, each block goes to a split at random;
* ``blocks``: every scene is cut along its longer side into three contiguous stripes (train, val, test, by
  the fractions), each stripe into ``window`` px blocks: validation and test areas do not interleave with
  the training area (less spatial leakage than ``random``).

Blocks are rows with a ``window`` column: training reads only those windows from the scenes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cspon_rs.errors import ConfigError, MissingFileError
from cspon_rs.training.pairs_csv import PAIRS_DEFAULTS, VECTOR_SUFFIXES, write_pairs_csv

__all__ = ["FoundPair", "SplitKind", "find_pairs", "init_dataset", "split_rows"]

SplitKind = Literal["pairs", "random", "blocks"]
_RASTERS = (".tif", ".tiff", ".vrt", ".img", ".jp2")
_DATE_FOLDERS = (("before", "after"), ("A", "B"), ("t1", "t2"), ("pre", "post"))
_DATE_SUFFIXES = (("_before", "_after"), ("_t1", "_t2"), ("_pre", "_post"), ("_A", "_B"))
_LABEL_FOLDERS = ("label", "labels", "OUT", "change")
_LABEL_SUFFIXES = ("_label", "_labels", "_changes", "_change", "_cm")


@dataclass
class FoundPair:
    """One pair found in the folder (paths relative to it)."""

    id: str
    before: str
    after: str
    label: str | None


def _files(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in suffixes}


def _label_in(folder: Path, stem: str) -> Path | None:
    for suffix in (*_RASTERS, ".png", *VECTOR_SUFFIXES):
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def find_pairs(root: str | Path) -> list[FoundPair]:
    """Pairs of a folder in one of the layouts of this module (see the module docstring).

    Raises:
        MissingFileError: ``root`` is not a folder, or no layout fits.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root}: not a folder")

    def rel(p: Path | None) -> str | None:
        return None if p is None else p.relative_to(root).as_posix()

    for d1, d2 in _DATE_FOLDERS:
        if (root / d1).is_dir() and (root / d2).is_dir():
            first, second = _files(root / d1, _RASTERS), _files(root / d2, _RASTERS)
            lab_dir = next((root / d for d in _LABEL_FOLDERS if (root / d).is_dir()), None)
            found = [
                FoundPair(s, rel(first[s]) or "", rel(second[s]) or "", rel(_label_in(lab_dir, s) if lab_dir else None))
                for s in sorted(first)
                if s in second
            ]
            if found:
                return found
    files = _files(root, _RASTERS)
    for s1, s2 in _DATE_SUFFIXES:
        found = []
        for stem, path in files.items():
            if stem.endswith(s1) and f"{stem[: -len(s1)]}{s2}" in files:
                pid = stem[: -len(s1)]
                label = next((p for sfx in _LABEL_SUFFIXES if (p := _label_in(root, pid + sfx)) is not None), None)
                found.append(FoundPair(pid, rel(path) or "", rel(files[pid + s2]) or "", rel(label)))
        if found:
            return found
    found = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        befores, afters = sorted(sub.glob("before*.tif")), sorted(sub.glob("after*.tif"))
        if len(befores) == 1 and len(afters) == 1:
            found.append(FoundPair(sub.name, rel(befores[0]) or "", rel(afters[0]) or "", rel(_label_in(sub, "label"))))
    if found:
        return found
    raise MissingFileError(
        f"{root}: no GeoTIFF pairs found; use folders before/ after/ [label/] (or A/ B/), files <id>_before.tif + "
        "<id>_after.tif [+ <id>_label.tif|.gpkg], or one folder per pair with before*.tif, after*.tif, label.*"
    )


def _grid(path: Path) -> tuple[int, int, float | None]:
    """``(width, height, pixel size in metres or None)`` of a raster."""
    from cspon_rs.geo.raster import open_raster

    with open_raster(path, require_crs=False) as src:
        size = None
        if src.crs is not None and src.crs.is_projected and abs(src.transform.a) == abs(src.transform.e):
            unit = src.crs.linear_units_factor[1] if src.crs.linear_units_factor else 1.0
            size = float(abs(src.transform.a) * unit)
        return src.width, src.height, size


def _assign(n: int, val: float, test: float, rng: np.random.Generator) -> list[str]:
    """Seeded split names for ``n`` items: at least one val (and test when asked) item when n allows it."""
    n_val = max(round(val * n), 1 if val > 0 and n >= 2 else 0)
    n_test = max(round(test * n), 1 if test > 0 and n - n_val >= 2 else 0)
    if n_val + n_test >= n:
        raise ConfigError(f"{n} items cannot be split into val {val} and test {test} with training left over")
    names = ["val"] * n_val + ["test"] * n_test + ["train"] * (n - n_val - n_test)
    return [names[i] for i in rng.permutation(n)]


def split_rows(
    pairs: Sequence[FoundPair],
    root: Path,
    *,
    split: SplitKind,
    val: float = 0.2,
    test: float = 0.1,
    window: int = 512,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Pairs CSV rows with a split each (whole pairs, or ``window`` px blocks of each scene)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    grids = {p.id: _grid(root / p.before) for p in pairs}
    if split == "pairs":
        for p, name in zip(pairs, _assign(len(pairs), val, test, rng), strict=True):
            rows.append({"id": p.id, "before": p.before, "after": p.after, "label": p.label, "split": name,
                         "pixel_size": grids[p.id][2]})
        return rows
    if window % 32:
        raise ConfigError(f"window must be a multiple of 32 px, got {window}")
    for p in pairs:
        width, height, size = grids[p.id]
        blocks = [(c, r, min(window, width - c), min(window, height - r))
                  for r in range(0, height, window) for c in range(0, width, window)]
        blocks = [b for b in blocks if b[2] >= 32 and b[3] >= 32]
        if split == "random":
            names = _assign(len(blocks), val, test, rng)
        else:  # contiguous stripes along the longer side: train | val | test
            along = 0 if width >= height else 1
            extent = width if along == 0 else height
            pos = [(b[along] + b[along + 2] / 2) / extent for b in blocks]
            names = ["train" if x < 1 - val - test else ("val" if x < 1 - test else "test") for x in pos]
        for (c, r, w, h), name in zip(blocks, names, strict=True):
            rows.append({"id": f"{p.id}_r{r}_c{c}", "before": p.before, "after": p.after, "label": p.label,
                         "split": name, "pixel_size": size, "window": f"{c} {r} {w} {h}"})
    return rows


def init_dataset(
    root: str | Path,
    *,
    labels: str | Path | None = None,
    split: SplitKind | None = None,
    val: float = 0.2,
    test: float = 0.1,
    window: int = 512,
    seed: int = 0,
    csv_name: str = "pairs.csv",
    config_name: str = "train.yaml",
) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Write ``<root>/pairs.csv`` and ``<root>/train.yaml`` for the pairs found in ``root``.

    Args:
        root: The folder of pairs.
        labels: Change polygons (any CRS) labelling every pair (else each pair's own label file).
        split: ``pairs``, ``random`` or ``blocks`` (default: ``pairs`` with 5 pairs or more, else ``blocks``).
        val, test: Shares of pairs / blocks for validation and test.
        window: Block edge in pixels (``random`` / ``blocks``).
        seed: Seed of the random assignment.

    Returns:
        ``(csv_path, config_path, rows)``.

    Raises:
        MissingFileError: No pairs, or a pair without a label (and no ``labels``).
    """
    import yaml

    from cspon_rs.training.provenance import atomic_write_text

    root = Path(root)
    pairs = find_pairs(root)
    if labels is not None:
        lab = Path(labels).resolve()
        if not lab.is_file():
            raise MissingFileError(f"{lab}: labels file not found")
        for p in pairs:
            p.label = str(lab)
    unlabelled = [p.id for p in pairs if p.label is None]
    if unlabelled:
        raise MissingFileError(
            f"{root}: no label for pairs {unlabelled[:5]}; give --labels CHANGES.gpkg (polygons for every pair) "
            "or put a label next to each pair (<id>_label.tif / label/<id>.tif / <id>_label.gpkg)"
        )
    kind: SplitKind = split or ("pairs" if len(pairs) >= 5 else "blocks")
    rows = split_rows(pairs, root, split=kind, val=val, test=test, window=window, seed=seed)
    csv_path = write_pairs_csv(root / csv_name, rows)
    from cspon_rs.training.pairs_csv import pairs_csv_data

    data, pixel_size = pairs_csv_data(csv_path)
    data["root"] = "."
    config = {
        **PAIRS_DEFAULTS,
        "data": {**data, **PAIRS_DEFAULTS["data"]},
        "output": {**PAIRS_DEFAULTS["output"], "dir": "runs/train"},
    }
    if pixel_size is not None:
        config["pixel_size_m"] = pixel_size
    header = (
        f"# Written by cspon-rs dataset init ({len(pairs)} pairs, split '{kind}', seed {seed}).\n"
        f"# Train with: cspon-rs train --pairs {csv_path.name}   (or: cspon-rs train -c {config_name})\n"
        "# Field reference: cspon-rs config schema (docs/config_reference.md).\n"
    )
    config_path = atomic_write_text(root / config_name, header + yaml.safe_dump(config, sort_keys=False))
    return csv_path, config_path, rows
