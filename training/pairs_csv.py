"""Training without YAML: a CSV of GeoTIFF pairs (``cspon-rs train --pairs pairs.csv``).

One row a pair (or a block of a pair), with a header. Columns:

* ``before``, ``after`` (required): date-1 and date-2 rasters; date 2 is warped onto the date-1 grid;
* ``label`` (required): change labels, a raster (``.tif``, ``.png``, ...: 0/1, 0/255, 1/2 or a ``label_map``)
  **or** a vector file (``.gpkg``, ``.shp``, ``.geojson``, ...: change polygons in any CRS);
* ``split`` (optional): ``train``, ``val`` or ``test`` (empty: train);
* ``pixel_size`` (optional): ground sampling distance in metres, the same on every row (recorded in the card);
* ``id``, ``label_layer``, ``aoi`` (polygons of the labelled area), ``window`` (``col row width height`` on the
  date-1 grid: only that block is read) (optional).

Relative paths are taken relative to the CSV file's folder. Everything else comes from
:data:`PAIRS_DEFAULTS` (the shipped checkpoints' recipe: ImageNet EfficientNet-Lite0 Siamese U-Net), changed with
``--set key=value`` or replaced by ``--init-from CHECKPOINT``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cspon_rs.errors import ConfigError, MissingFileError

__all__ = [
    "CSV_COLUMNS",
    "PAIRS_DEFAULTS",
    "VECTOR_SUFFIXES",
    "config_from_pairs_csv",
    "pairs_csv_data",
    "read_pairs_csv",
    "write_pairs_csv",
]

#: Columns of a pairs CSV, in the order :func:`write_pairs_csv` writes them.
CSV_COLUMNS = ("id", "before", "after", "label", "split", "pixel_size", "label_layer", "aoi", "window")
_REQUIRED = ("before", "after", "label")
_SPLITS = ("train", "val", "test")

#: Label files read as polygons (anything else is read as a raster).
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".kml", ".gml", ".sqlite", ".parquet")

#: The config a pairs CSV trains with, before ``--set`` overrides: the shipped checkpoints' recipe
#: (ImageNet EfficientNet-Lite0 encoder, frozen encoder batch norm, encoder at a fifth of the learning rate).
PAIRS_DEFAULTS: dict[str, Any] = {
    "data": {"crop_size": 128, "crops_per_epoch": 256, "positive_fraction": 0.5},
    "model": {
        "architecture": "siam_unet",
        "init_kwargs": {
            "encoder_name": "tu-tf_efficientnet_lite0",
            "encoder_depth": 4,
            "decoder_channels": [64, 48, 32, 16],
            "fusion": "absdiff",
        },
        "pretrained": True,
        "normalization": "band_stats_half",
    },
    "augment": {"brightness": 0.15, "contrast": 0.15},
    "optim": {
        "epochs": 10,
        "batch_size": 8,
        "lr": 1e-3,
        "encoder_lr_factor": 0.2,
        "warmup_epochs": 1,
        "freeze_encoder_bn": True,
        "pos_weight": 2.0,
    },
    "output": {"dir": "runs/train", "name": "change-model", "version": "0.1.0"},
}


def read_pairs_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a pairs CSV as dicts (UTF-8, with or without BOM), each with an ``id``.

    Raises:
        MissingFileError: No such file.
        ConfigError: A required column is missing, a required cell is empty, an unknown column or split, or two
            rows with the same id (the message names the row).
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"{p}: pairs CSV not found (make one with cspon-rs dataset init DIR)")
    with p.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise ConfigError(f"{p}: missing column(s) {missing}; a pairs CSV needs {list(_REQUIRED)} (header row)")
        unknown = [c for c in header if c not in CSV_COLUMNS]
        if unknown:
            raise ConfigError(f"{p}: unknown column(s) {unknown}; known: {list(CSV_COLUMNS)}")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise ConfigError(f"{p}: no pairs (only a header)")
    seen: set[str] = set()
    for n, row in enumerate(rows, start=2):
        for col in _REQUIRED:
            if not row.get(col):
                raise ConfigError(f"{p}: row {n}: column {col!r} is empty")
        row["id"] = row.get("id") or Path(row["before"]).stem
        if row["id"] in seen:
            raise ConfigError(f"{p}: row {n}: id {row['id']!r} appears twice (give an 'id' column)")
        seen.add(row["id"])
        if row.get("split", "") not in ("", *_SPLITS):
            raise ConfigError(f"{p}: row {n}: split {row['split']!r} is not one of {list(_SPLITS)} (or empty)")
    return rows


def _window(value: str, where: str) -> list[int] | None:
    if not value:
        return None
    parts = value.replace(",", " ").split()
    if len(parts) != 4 or not all(x.lstrip("-").isdigit() for x in parts):
        raise ConfigError(f"{where}: window {value!r} must be 'col row width height' (pixels)")
    return [int(x) for x in parts]


def pairs_csv_data(path: str | Path) -> tuple[dict[str, Any], float | None]:
    """The ``data`` section (``kind: geotiff_pairs``, pairs and splits) of a pairs CSV and its pixel size (m).

    Raises:
        ConfigError: Bad rows (see :func:`read_pairs_csv`) or pixel sizes that differ between rows.
    """
    p = Path(path)
    rows = read_pairs_csv(p)
    pairs: list[dict[str, Any]] = []
    splits: dict[str, list[str]] = {s: [] for s in _SPLITS}
    sizes: set[float] = set()
    for n, row in enumerate(rows, start=2):
        spec: dict[str, Any] = {"id": row["id"], "before": row["before"], "after": row["after"]}
        if Path(row["label"]).suffix.lower() in VECTOR_SUFFIXES:
            spec["label_vector"] = row["label"]
            if row.get("label_layer"):
                spec["label_layer"] = row["label_layer"]
        else:
            spec["label"] = row["label"]
        if row.get("aoi"):
            spec["aoi"] = row["aoi"]
        window = _window(row.get("window", ""), f"{p}: row {n}")
        if window is not None:
            spec["window"] = window
        pairs.append(spec)
        splits[row.get("split") or "train"].append(row["id"])
        if row.get("pixel_size"):
            try:
                sizes.add(float(row["pixel_size"]))
            except ValueError as exc:
                raise ConfigError(f"{p}: row {n}: pixel_size {row['pixel_size']!r} is not a number") from exc
    if len(sizes) > 1:
        raise ConfigError(f"{p}: pixel_size differs between rows {sorted(sizes)}; one model card has one pixel size")
    data: dict[str, Any] = {"kind": "geotiff_pairs", "root": str(p.resolve().parent), "pairs": pairs}
    data.update({s: ids for s, ids in splits.items() if ids})
    return data, (sizes.pop() if sizes else None)


def config_from_pairs_csv(
    path: str | Path, sets: Sequence[str] = (), base: dict[str, Any] | None = None
) -> Any:
    """A :class:`~cspon_rs.training.config.TrainConfig` from a pairs CSV, :data:`PAIRS_DEFAULTS` (or ``base``)
    and ``--set`` items; relative paths (also ``output.dir``) resolve against the CSV's folder."""
    import copy

    from cspon_rs.training.config import train_config_from_dict

    data_section, pixel_size = pairs_csv_data(path)
    raw = copy.deepcopy(base if base is not None else PAIRS_DEFAULTS)
    raw["data"] = {**raw.get("data", {}), **data_section}
    if pixel_size is not None:
        raw["pixel_size_m"] = pixel_size
    return train_config_from_dict(raw, Path(path).resolve().parent, str(path), sets)


def write_pairs_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows (dicts with :data:`CSV_COLUMNS` keys; missing ones empty) as a pairs CSV (UTF-8), atomically,
    mode 0644 less the umask."""
    import io

    from cspon_rs.training.provenance import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row[c] for c in CSV_COLUMNS})
    return atomic_write_text(path, buf.getvalue())
