"""Loading change-detection training/evaluation pairs into memory.

Supported sources:

* **LEVIR-style folders**: ``A/``, ``B/``, ``label/`` with same-named images (PNG/JPG/TIF), labels 0/255
  or 0/1, optional ``list/<split>.txt`` files of names. No georeference is needed.
* **GeoTIFF pairs** (:class:`~cspon_rs.training.config.PairSpec`): date 2 is warped onto the date-1 grid
  (:func:`cspon_rs.geo.raster.aligned_pair`); the label is a raster (read on the date-1 grid) or change
  polygons (any CRS) burned onto the date-1 grid.
* **OSCD** (Onera Satellite Change Detection): ``A/<city>/*_<band>.tif`` single-band Sentinel-2 files; the
  selected bands are stacked on the date-1 10 m grid (taken from ``*_B02.tif``), date 2 is warped onto it,
  and the label ``label/<city>/<city>-cm.tif`` (1 = no change, 2 = change, no georeference) becomes 0/1.
* **Pair folders**: ``before*.tif``, ``after*.tif``, ``label.tif`` in one folder (the bundled demo data).

All pairs are held in memory as :class:`ChangePair` (raw pixel units, float32). Training draws random crops
with :func:`sample_batch`.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cspon_rs.errors import GridMismatchError, LabelError, MissingFileError
from cspon_rs.training.config import DataConfig, PairSpec, SourceConfig, Split
from cspon_rs.training.synthetic import SyntheticSampler

__all__ = [
    "IGNORE",
    "KNOWN_LABEL_ENCODINGS",
    "OSCD_DEFAULT_BANDS",
    "ChangePair",
    "all_ids",
    "band_stats",
    "data_fingerprint",
    "decode_label",
    "levir_ids",
    "load_geotiff_pair",
    "load_levir",
    "load_oscd",
    "load_pack",
    "load_pair_folder",
    "load_pairs_from",
    "load_source_split",
    "load_split",
    "make_pack",
    "oscd_cities",
    "resize_crop",
    "resolve_split",
    "sample_batch",
    "save_pack",
    "validate_label",
]

OSCD_DEFAULT_BANDS = ["B04", "B03", "B02", "B08"]
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class ChangePair:
    """One co-registered pair with its change label, in memory.

    Attributes:
        id: Name of the pair (file stem or city).
        before: ``(C, H, W)`` float32 date-1 pixels in the source's raw units.
        after: ``(C, H, W)`` float32 date-2 pixels on the same grid.
        label: ``(H, W)`` uint8, 1 = change, 0 = no change.
        valid: ``(H, W)`` bool, False where either date has no data (ignored by loss and metrics).
        bands: Band names in channel order.
        source: File or folder it came from (for messages).
    """

    id: str
    before: np.ndarray
    after: np.ndarray
    label: np.ndarray
    valid: np.ndarray
    bands: list[str]
    source: str
    crs: str | None = None
    transform: tuple[float, ...] | None = field(default=None)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.label.shape[0]), int(self.label.shape[1])


#: Label encodings recognised from the values, in this order: value sets and the value meaning change.
#: ``1/2`` is OSCD's (1 = no change, 2 = change). A label whose values fit several (only 0s, only 1s) takes
#: the first in the caller's order; ``label_map`` in a data config removes any doubt.
KNOWN_LABEL_ENCODINGS: tuple[set[int], ...] = ({0, 1}, {0, 255}, {1, 2})

#: ``label_map`` value that marks a raw label value as "not labelled" (excluded from loss and metrics).
IGNORE = "ignore"


def _label_hint(values: list[int]) -> str:
    """The config change that decodes a label with these values (for error messages)."""
    if max(values) <= 31:  # class codes (multi-class or another encoding): a mapping, never a threshold
        guess = ", ".join(f"{v}: {0 if v == min(values) else 1}" for v in values)
        return (
            f"map every value to 0 (no change), 1 (change) or ignore in the data config, e.g. "
            f"'label_map: {{{guess}}}' (or --set data.label_map='{{{guess}}}')"
        )
    return (
        "set 'label_threshold: 127' in the data config (change = value > 127; for 0/255 labels with stray grey "
        "or JPEG-artefact values), or map each value with 'label_map'"
    )


def decode_label(
    array: np.ndarray,
    source: str | Path,
    *,
    allowed: Sequence[set[int]] = KNOWN_LABEL_ENCODINGS,
    threshold: int | None = None,
    label_map: Mapping[int, int | str] | None = None,
    ignore_value: int | None = None,
    first_fit: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn a label raster into 0/1 change and a mask of labelled pixels, finding the encoding from its values.

    Recognised without configuration (``allowed``, in order): 0/1, 0/255 and OSCD's 1/2 (2 = change).
    ``label_map`` maps every raw value to 0 (no change), 1 (change) or ``"ignore"`` (multi-class labels,
    partial labels); ``threshold`` binarises any values (change = value > threshold); ``ignore_value``
    marks unlabelled pixels (e.g. 255) whatever the encoding.

    Args:
        array: ``(H, W)`` label pixels.
        source: File name used in messages.
        allowed: Value sets recognised from the values; the largest value of the matching set means change.
        threshold: Binarisation asked for by the user (``data.label_threshold``).
        label_map: Raw value -> 0, 1 or ``"ignore"`` (``data.label_map``); values it does not name are an error.
        ignore_value: Raw value excluded from loss and metrics (``data.ignore_value``).
        first_fit: When the values fit several encodings that read differently (a label of only 1s: all change
            in 0/1, no change in 1/2), take the first of ``allowed`` instead of raising (a loader that knows its
            dataset's encoding).

    Returns:
        ``(label, labelled)``: ``(H, W)`` uint8 0/1 and ``(H, W)`` bool, False where the pixel is ignored.

    Raises:
        LabelError: Values outside every known encoding (the message lists them, names the file and gives the
            config change that decodes them), or a label with change values that decodes to no change at all
            (e.g. a threshold above the change value).
    """
    labelled = np.ones(array.shape, dtype=bool) if ignore_value is None else array != ignore_value
    values = sorted(int(v) for v in np.unique(array[labelled]))
    if label_map is not None:
        unknown = [v for v in values if v not in label_map]
        if unknown:
            raise LabelError(
                f"{source}: label values {unknown[:10]} are not in data.label_map {dict(label_map)}; "
                "add them (0 = no change, 1 = change, ignore = unlabelled)"
            )
        change = [int(k) for k, v in label_map.items() if v == 1]
        ignored = [int(k) for k, v in label_map.items() if v == IGNORE]
        labelled &= ~np.isin(array, ignored)
        label = (np.isin(array, change) & labelled).astype(np.uint8)
    elif threshold is not None:
        label = ((array > threshold) & labelled).astype(np.uint8)
        how = f"label_threshold {threshold} (change = value > {threshold})"
        if not label.any() and len(values) > 1:
            fits = [o for o in allowed if set(values) <= o]
            lo = values[-2]  # the largest value that is not the largest: change = value > it
            fix = (
                f"remove label_threshold ({'/'.join(map(str, sorted(fits[0])))} labels are recognised as they are, "
                f"change = {max(fits[0])}) or set label_threshold: {lo}"
                if fits
                else f"set label_threshold: {lo} or map each value with label_map"
            )
            raise LabelError(
                f"{source}: {how} turns every pixel into 'no change' (values {values}); {fix}"
            )
        return label, labelled
    else:
        fits = [o for o in allowed if set(values) <= o]
        if len({max(o) in values for o in fits}) > 1 and not first_fit:
            readings = ", ".join(
                f"{'/'.join(map(str, sorted(o)))} -> {'all change' if max(o) in values else 'no change'}" for o in fits
            )
            raise LabelError(
                f"{source}: label holds only the value(s) {values}, which reads differently in the encodings "
                f"{readings}; say which with data.label_map (e.g. 'label_map: {{{values[0]}: 0}}' for no change)"
            )
        if fits:
            label = ((array == max(fits[0])) & labelled).astype(np.uint8)
            return label, labelled
        bad = sorted(set(values) - set().union(*allowed))
        shown = bad[:10] if bad else values
        raise LabelError(
            f"{source}: label has values {shown}{' ...' if len(bad) > 10 else ''} (all values: {values[:20]}); "
            f"expected one of the encodings {' or '.join('/'.join(map(str, sorted(o))) for o in allowed)} -- "
            + _label_hint(values)
        )
    return label, labelled


def validate_label(
    array: np.ndarray,
    source: str | Path,
    *,
    allowed: Sequence[set[int]] = ({0, 1}, {0, 255}),
    threshold: int | None = None,
) -> np.ndarray:
    """Check a label's values and return it as 0/1 uint8 (see :func:`decode_label`, which also returns the
    mask of labelled pixels and knows more encodings).

    Raises:
        LabelError: Values outside every allowed set (the message lists the offending values and file).
    """
    return decode_label(array, source, allowed=allowed, threshold=threshold, first_fit=True)[0]


def _read_image(path: Path) -> np.ndarray:
    """Read an image file as ``(bands, H, W)`` (PNG/JPG via Pillow, TIF via rasterio)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import warnings

        from rasterio.errors import NotGeoreferencedWarning

        from cspon_rs.geo.raster import open_raster

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with open_raster(path, require_crs=False) as src:
                arr: np.ndarray = src.read()
        return arr
    from PIL import Image

    with Image.open(path) as img:
        data = np.asarray(img)
    return data[None] if data.ndim == 2 else np.moveaxis(data, -1, 0)


def _find_same_stem(folder: Path, stem: str) -> Path | None:
    for suffix in _IMAGE_SUFFIXES:
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


#: Folder names (date 1, date 2, label) of a LEVIR-style dataset.
LEVIR_DIRS = ("A", "B", "label")


def levir_ids(root: str | Path, dirs: Sequence[str] = LEVIR_DIRS) -> list[str]:
    """Names (stems) of the pairs in a LEVIR-style folder, from ``label/`` (``dirs[2]``).

    Raises:
        MissingFileError: ``A/``, ``B/`` or ``label/`` is missing.
        LabelError: ``label/`` holds no image.
    """
    root = Path(root)
    for sub in dirs:
        if not (root / sub).is_dir():
            raise MissingFileError(
                f"{root / sub}: folder not found; this dataset has {', '.join(d + '/' for d in dirs)}"
            )
    ids = sorted(p.stem for p in (root / dirs[2]).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not ids:
        raise LabelError(f"{root / dirs[2]}: no label images ({', '.join(_IMAGE_SUFFIXES)}) found")
    return ids


def load_levir(
    root: str | Path,
    ids: Sequence[str] | None = None,
    *,
    label_threshold: int | None = None,
    label_map: Mapping[int, int | str] | None = None,
    ignore_value: int | None = None,
    dirs: Sequence[str] = LEVIR_DIRS,
) -> list[ChangePair]:
    """Load pairs of a LEVIR-style folder (``A/``, ``B/``, ``label/`` with the same file names; other folder
    names with ``dirs``, e.g. ``("time1", "time2", "label")``).

    Args:
        root: Dataset folder.
        ids: Names to load (default: all in ``label/``).
        label_threshold: Binarise labels as value > this (default: the encoding is found from the values,
            0/1, 0/255 or 1/2; see :func:`decode_label`).
        label_map, ignore_value: See :func:`decode_label`.

    Raises:
        MissingFileError: A folder or the A/B image of a label is missing.
        GridMismatchError: A, B and label of a pair differ in size, or A and B in band count.
        LabelError: Empty label folder or label values of no known encoding.
    """
    root = Path(root)
    names = list(ids) if ids is not None else levir_ids(root, dirs)
    if ids is not None:
        levir_ids(root, dirs)
    pairs = []
    for name in names:
        paths = {}
        for key, sub in zip(("A", "B", "label"), dirs, strict=True):
            p = _find_same_stem(root / sub, name)
            if p is None:
                raise MissingFileError(f"{root / sub}: no image named {name}.* (needed for pair {name!r})")
            paths[key] = p
        a, b, lab = (_read_image(paths[s]) for s in ("A", "B", "label"))
        if lab.shape[0] > 1:
            lab = lab[:1]
        if a.shape != b.shape:
            raise GridMismatchError(
                f"pair {name!r}: {paths['A']} has shape {a.shape} (bands, H, W) but {paths['B']} has {b.shape}"
            )
        if lab.shape[1:] != a.shape[1:]:
            raise GridMismatchError(
                f"pair {name!r}: label {paths['label']} is {lab.shape[1:]} (H, W) but images are {a.shape[1:]}"
            )
        if a.shape[0] == 4 and paths["A"].suffix.lower() == ".png":  # RGBA PNG: drop alpha
            a, b = a[:3], b[:3]
        label, labelled = decode_label(
            lab[0], paths["label"], threshold=label_threshold, label_map=label_map, ignore_value=ignore_value
        )
        bands = ["R", "G", "B"] if a.shape[0] == 3 else [f"band{i + 1}" for i in range(a.shape[0])]
        pairs.append(
            ChangePair(
                id=name,
                before=a.astype(np.float32),
                after=b.astype(np.float32),
                label=label,
                valid=labelled,
                bands=bands,
                source=str(root),
            )
        )
    return pairs


def oscd_cities(root: str | Path) -> list[str]:
    """Cities of an OSCD folder (those with both dates and a label)."""
    root = Path(root)
    if not (root / "A").is_dir():
        raise MissingFileError(f"{root / 'A'}: folder not found; an OSCD folder has A/<city>, B/<city>, label/<city>")
    cities = sorted(p.name for p in (root / "A").iterdir() if p.is_dir() and (root / "label" / p.name).is_dir())
    if not cities:
        raise LabelError(f"{root / 'label'}: no city folders with labels found")
    return cities


#: Sentinel-2 file names of the band aliases (``red`` -> ``B04``...), see :data:`cspon_rs.models.card.BAND_ALIASES`.
_S2_NAME = {"red": "B04", "green": "B03", "blue": "B02", "nir": "B08"}


def _oscd_band_file(folder: Path, band: str) -> Path:
    from cspon_rs.models.card import canonical_band

    band = _S2_NAME.get(canonical_band(band) or "", band)
    hits = sorted(glob.glob(str(folder / f"*_{band}.tif")))
    if not hits:
        raise MissingFileError(f"{folder}: no file *_{band}.tif for band {band}")
    return Path(hits[0])


def _read_on_grid(path: Path, ref: Any) -> np.ndarray:
    """Read band 1 of ``path`` resampled onto the grid of the open dataset ``ref`` (bilinear)."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    from cspon_rs.geo.raster import open_raster

    with open_raster(path) as src:
        same = (
            src.crs == ref.crs
            and src.width == ref.width
            and src.height == ref.height
            and src.transform.almost_equals(ref.transform, precision=1e-9)
        )
        if same:
            out: np.ndarray = src.read(1).astype(np.float32)
            return out
        with WarpedVRT(
            src,
            crs=ref.crs,
            transform=ref.transform,
            width=ref.width,
            height=ref.height,
            resampling=Resampling.bilinear,
            src_nodata=src.nodata if src.nodata is not None else 0,
            nodata=0,
        ) as vrt:
            warped: np.ndarray = vrt.read(1).astype(np.float32)
            return warped


def load_oscd(
    root: str | Path, cities: Sequence[str] | None = None, bands: Sequence[str] = OSCD_DEFAULT_BANDS
) -> list[ChangePair]:
    """Load OSCD cities as band stacks on the date-1 10 m grid.

    Args:
        root: The ``train_labelled`` folder holding ``A/``, ``B/``, ``label/``.
        cities: Cities to load (default: all).
        bands: Sentinel-2 band names to stack, in order (e.g. ``B04,B03,B02,B08``); 20/60 m bands are
            resampled (bilinear) onto the 10 m grid.

    Returns:
        One :class:`ChangePair` per city, raw L1C digital numbers (reflectance x 10000), label 0/1.

    Raises:
        MissingFileError: A band file or label is missing.
        LabelError: Label values other than 1/2 (or 0/1), or label size differs from the image.
    """
    from cspon_rs.geo.raster import open_raster

    root = Path(root)
    names = list(cities) if cities is not None else oscd_cities(root)
    pairs = []
    for city in names:
        folder_a, folder_b = root / "A" / city, root / "B" / city
        ref_path = _oscd_band_file(folder_a, "B02")
        with open_raster(ref_path) as ref:
            before = np.stack([_read_on_grid(_oscd_band_file(folder_a, b), ref) for b in bands])
            after = np.stack([_read_on_grid(_oscd_band_file(folder_b, b), ref) for b in bands])
            crs, transform = str(ref.crs), tuple(ref.transform)[:6]
        label_path = root / "label" / city / f"{city}-cm.tif"
        if not label_path.is_file():
            raise MissingFileError(f"{label_path}: OSCD change map not found for city {city!r}")
        lab = _read_image(label_path)[0]
        if lab.shape != before.shape[1:]:
            raise GridMismatchError(
                f"{label_path}: label is {lab.shape} (H, W) but {ref_path.name} is {before.shape[1:]}"
            )
        label, labelled = decode_label(lab, label_path, allowed=({1, 2}, {0, 1}), first_fit=True)
        valid: np.ndarray = np.asarray((before > 0).any(axis=0) & (after > 0).any(axis=0) & labelled)
        pairs.append(ChangePair(city, before, after, label, valid, list(bands), str(folder_a), crs, transform))
    return pairs


def _resolve(root: Path | None, p: Path) -> Path:
    return p if p.is_absolute() or root is None else root / p


def load_geotiff_pair(
    spec: PairSpec,
    root: str | Path | None = None,
    bands: Sequence[str] | None = None,
    *,
    label_threshold: int | None = None,
    label_map: Mapping[int, int | str] | None = None,
    ignore_value: int | None = None,
    band_indexes: Sequence[int] | None = None,
) -> ChangePair:
    """Load one GeoTIFF pair, date 2 warped onto the date-1 grid, label raster or polygons on that grid.

    Only ``spec.window`` (a block of the date-1 grid) is read when it is given, so a block of a large scene
    costs the block's memory, not the scene's.

    Args:
        spec: File names of the pair (relative to ``root`` unless absolute) and optional window.
        root: Base folder of relative paths.
        bands: Band names to record (default: the GeoTIFF band descriptions, or ``band1..``).
        label_threshold, label_map, ignore_value: Label decoding (:func:`decode_label`).
        band_indexes: 1-based bands to read from both dates (default: all).

    Raises:
        MissingFileError, CRSError, GridMismatchError: From the raster helpers.
        LabelError: Label values other than 0/1 or 0/255.
    """
    from rasterio.enums import Resampling
    from rasterio.features import rasterize
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from cspon_rs.geo.raster import aligned_pair, open_raster

    base = Path(root) if root is not None else None
    before_path, after_path = _resolve(base, spec.before), _resolve(base, spec.after)
    with aligned_pair(before_path, after_path) as (src_a, src_b):
        full_shape, full_transform = (src_a.height, src_a.width), src_a.transform
        win = Window(*spec.window) if spec.window is not None else Window(0, 0, src_a.width, src_a.height)
        if win.col_off < 0 or win.row_off < 0 or win.col_off + win.width > src_a.width or (
            win.row_off + win.height > src_a.height
        ):
            raise GridMismatchError(
                f"pair {spec.id!r}: window {spec.window} (col, row, width, height) reaches outside {before_path} "
                f"({src_a.width} x {src_a.height} px)"
            )
        indexes = list(band_indexes) if band_indexes else list(range(1, src_a.count + 1))
        if max(indexes) > src_a.count or min(indexes) < 1:
            raise GridMismatchError(f"{before_path}: has {src_a.count} bands; cannot read bands {indexes}")
        before = src_a.read(indexes=indexes, window=win).astype(np.float32)  # only the window is read
        after = src_b.read(indexes=indexes, window=win).astype(np.float32)
        crs, transform = src_a.crs, window_transform(win, full_transform)
        height, width = int(win.height), int(win.width)
        names = list(bands) if bands else [src_a.descriptions[i - 1] or f"band{i}" for i in indexes]
        nodata_a = src_a.nodata
    if spec.label is not None:
        label_path = _resolve(base, spec.label)
        with open_raster(label_path, require_crs=False) as lab_src:
            if lab_src.crs is None or (
                lab_src.crs == crs
                and lab_src.shape == full_shape
                and lab_src.transform.almost_equals(full_transform)
            ):
                if lab_src.shape != full_shape:
                    raise GridMismatchError(
                        f"{label_path}: label is {lab_src.shape} (H, W) without CRS but {before_path} is "
                        f"{full_shape}; give the label the image's grid or a CRS"
                    )
                lab = lab_src.read(1, window=win)
            else:
                with WarpedVRT(
                    lab_src,
                    crs=crs,
                    transform=transform,
                    width=width,
                    height=height,
                    resampling=Resampling.nearest,
                ) as vrt:
                    lab = vrt.read(1)
        label, labelled = decode_label(
            lab, label_path, threshold=label_threshold, label_map=label_map, ignore_value=ignore_value
        )
        source = str(label_path)
    else:
        assert spec.label_vector is not None
        from cspon_rs.geo.vector import read_vector

        vec_path = _resolve(base, spec.label_vector)
        gdf = read_vector(vec_path, layer=spec.label_layer, to_crs=crs)
        shapes = [(geom, 1) for geom in gdf.geometry if geom is not None and not geom.is_empty]
        label = (
            rasterize(shapes, out_shape=(height, width), transform=transform, fill=0, dtype="uint8")
            if shapes
            else np.zeros((height, width), dtype=np.uint8)
        )
        labelled = np.ones((height, width), dtype=bool)
        source = str(vec_path)
    if spec.aoi is not None:  # partial labels: only pixels inside the labelled area count
        from cspon_rs.geo.vector import read_vector

        aoi = read_vector(_resolve(base, spec.aoi), to_crs=crs)
        aoi_shapes = [(geom, 1) for geom in aoi.geometry if geom is not None and not geom.is_empty]
        if not aoi_shapes:
            raise LabelError(f"{_resolve(base, spec.aoi)}: the labelled-area layer has no polygon")
        labelled &= rasterize(aoi_shapes, out_shape=(height, width), transform=transform, fill=0, dtype="uint8") > 0
    valid = ~(before == nodata_a).all(axis=0) if nodata_a is not None else np.ones((height, width), dtype=bool)
    valid &= (after != 0).any(axis=0) | (before == 0).all(axis=0)
    valid &= labelled
    return ChangePair(spec.id, before, after, label, valid, names, source, str(crs), tuple(transform)[:6])


def load_pair_folder(folder: str | Path, bands: Sequence[str] | None = None) -> ChangePair:
    """Load a folder with ``before*.tif``, ``after*.tif`` and ``label.tif`` (e.g. ``data_samples/hongkong``)."""
    folder = Path(folder)
    befores = sorted(folder.glob("before*.tif"))
    afters = sorted(folder.glob("after*.tif"))
    if len(befores) != 1 or len(afters) != 1 or not (folder / "label.tif").is_file():
        raise MissingFileError(
            f"{folder}: expected exactly one before*.tif, one after*.tif and label.tif "
            f"(found {[p.name for p in befores + afters]})"
        )
    spec = PairSpec(id=folder.name, before=befores[0], after=afters[0], label=folder / "label.tif")
    return load_geotiff_pair(spec, None, bands)


def all_ids(cfg: SourceConfig) -> list[str]:
    """Every pair id available in one source."""
    if cfg.kind == "levir":
        return levir_ids(cfg.root)
    if cfg.kind == "oscd":
        return oscd_cities(cfg.root)
    return [p.id for p in cfg.pairs]


def _split_ids(cfg: SourceConfig, split: Split) -> list[str] | None:
    if split is None:
        return None
    if isinstance(split, str):
        path = _resolve(cfg.root, Path(split))
        if not path.is_file():
            raise MissingFileError(f"{path}: split list file not found")
        return [
            line.strip().rsplit(".", 1)[0] if line.strip().lower().endswith(_IMAGE_SUFFIXES) else line.strip()
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    return list(split)


def resolve_split(cfg: SourceConfig, which: str) -> list[str]:
    """Ids of split ``which`` (``train``/``val``/``test``) of one source; train defaults to all ids not in
    val or test.

    Raises:
        LabelError: An id named in a split does not exist in the dataset.
    """
    available = all_ids(cfg)
    ids = _split_ids(cfg, getattr(cfg, which))
    if ids is None:
        if which != "train":
            return []
        held = set(_split_ids(cfg, cfg.val) or []) | set(_split_ids(cfg, cfg.test) or [])
        ids = [i for i in available if i not in held]
    unknown = [i for i in ids if i not in available]
    if unknown:
        raise LabelError(f"{cfg.root}: {which} split names unknown pairs {unknown[:5]}; available: {available[:10]}")
    return ids


def load_source_split(src: SourceConfig, which: str, *, stream: bool = False) -> list[Any]:
    """Load the pairs of one split of one source (ids as in the source).

    With ``stream`` (``geotiff_pairs`` only), the pairs are :class:`~cspon_rs.training.windowed.StreamPair`:
    read window by window while training, never whole.
    """
    coding: dict[str, Any] = {
        "label_threshold": src.label_threshold,
        "label_map": src.label_map,
        "ignore_value": src.ignore_value,
    }
    if src.kind == "standard":  # official splits of a dataset by name (cspon_rs.training.standard)
        from cspon_rs.training.standard import load_standard, standard_ids

        assert src.dataset is not None
        chosen = _split_ids(src, getattr(src, which))
        if which == "train" and chosen is None:
            held = set(_split_ids(src, src.val) or []) | set(_split_ids(src, src.test) or [])
            if held:  # validation ids taken from the official train split
                chosen = [i for i in standard_ids(src.dataset, src.root, "train") if i not in held]
        return load_standard(src.dataset, src.root, which, chosen, **coding)
    ids = resolve_split(src, which)
    if not ids:
        return []
    if stream and src.kind == "geotiff_pairs":
        from cspon_rs.training.windowed import open_stream_pair

        by_id = {p.id: p for p in src.pairs}
        return [
            open_stream_pair(
                by_id[i],
                src.root,
                bands=src.bands,
                band_indexes=src.band_indexes,
                label_threshold=src.label_threshold,
                label_map=src.label_map,
                ignore_value=src.ignore_value,
            )
            for i in ids
        ]
    if src.kind == "levir":
        return load_levir(src.root, ids, **coding)
    if src.kind == "oscd":
        return load_oscd(src.root, ids, src.bands or OSCD_DEFAULT_BANDS)
    specs = {p.id: p for p in src.pairs}
    return [load_geotiff_pair(specs[i], src.root, src.bands, band_indexes=src.band_indexes, **coding) for i in ids]


def load_split(cfg: DataConfig | SourceConfig, which: str, *, stream: bool = False) -> list[Any]:
    """Load the pairs of one split of every source of a data config (see :func:`resolve_split`).

    Pairs of the first source keep their ids; pairs of ``extra_sources`` are named ``<source>/<id>``. With
    ``stream``, ``geotiff_pairs`` sources give window-by-window pairs (see :func:`load_source_split`).
    """
    if not isinstance(cfg, DataConfig):
        return load_source_split(cfg, which, stream=stream)
    pairs: list[Any] = []
    for k, src in enumerate(cfg.sources()):
        for pair in load_source_split(src, which, stream=stream):
            if k:
                pair.id = f"{src.name}/{pair.id}"
            pairs.append(pair)
    return pairs


def band_stats(pairs: Sequence[Any]) -> tuple[list[float], list[float]]:
    """Per-band mean and std (raw units) over the valid pixels of both dates of ``pairs`` (in-memory pairs, or
    window-by-window pairs with their sums from the opening pass)."""
    if not pairs:
        raise LabelError("cannot compute normalisation statistics: no training pairs")
    c = _n_bands(pairs[0])
    total = np.zeros(c, dtype=np.float64)
    total_sq = np.zeros(c, dtype=np.float64)
    n = 0
    for p in pairs:
        if not isinstance(p, ChangePair):  # StreamPair: sums from its opening pass
            total += p.band_sum
            total_sq += p.band_sq
            n += p.n_valid
            continue
        for img in (p.before, p.after):
            px = img[:, p.valid].astype(np.float64)
            total += px.sum(axis=1)
            total_sq += (px * px).sum(axis=1)
            n += px.shape[1]
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(total_sq / max(n, 1) - mean * mean, 0.0))
    return [float(m) for m in mean], [float(max(s, 1e-3)) for s in std]


Crop = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _n_bands(pair: Any) -> int:
    """Bands per date of an in-memory or a window-by-window pair."""
    return int(pair.before.shape[0]) if isinstance(pair, ChangePair) else int(pair.n_bands)


def _crop(p: ChangePair, rng: np.random.Generator, c: int, want_pos: bool) -> Crop:
    """A ``c`` x ``c`` crop of a pair (zero-padded and marked invalid where the pair is smaller)."""
    h, w = p.shape
    sparse = not p.valid.all() and p.valid.mean() < 0.5  # e.g. labels only inside verified polygons
    if (want_pos and p.label.any()) or (sparse and p.valid.any()):
        ys, xs = np.nonzero(p.label if want_pos and p.label.any() else p.valid)
        k = int(rng.integers(len(ys)))
        y0 = int(ys[k]) - int(rng.integers(c))
        x0 = int(xs[k]) - int(rng.integers(c))
    else:
        y0 = int(rng.integers(max(h - c, 0) + 1))
        x0 = int(rng.integers(max(w - c, 0) + 1))
    y0 = min(max(y0, 0), max(h - c, 0))
    x0 = min(max(x0, 0), max(w - c, 0))
    hh, ww = min(c, h), min(c, w)
    ch = p.before.shape[0]
    a = np.zeros((ch, c, c), dtype=np.float32)
    b = np.zeros_like(a)
    lab = np.zeros((c, c), dtype=np.uint8)
    val = np.zeros((c, c), dtype=bool)
    a[:, :hh, :ww] = p.before[:, y0 : y0 + hh, x0 : x0 + ww]
    b[:, :hh, :ww] = p.after[:, y0 : y0 + hh, x0 : x0 + ww]
    lab[:hh, :ww] = p.label[y0 : y0 + hh, x0 : x0 + ww]
    val[:hh, :ww] = p.valid[y0 : y0 + hh, x0 : x0 + ww]
    return a, b, lab, val


def resize_crop(
    a: np.ndarray, b: np.ndarray, lab: np.ndarray, valid: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Resample a square crop to ``size`` px: images bilinear (antialiased), label and valid nearest."""
    if a.shape[-1] == size:
        return a, b, lab, valid
    import torch
    import torch.nn.functional as F

    imgs = torch.from_numpy(np.stack([a, b]))
    imgs = F.interpolate(imgs, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    masks = torch.from_numpy(np.stack([lab.astype(np.float32), valid.astype(np.float32)]))[:, None]
    masks = F.interpolate(masks, size=(size, size), mode="nearest")[:, 0]
    out = imgs.numpy()
    m = masks.numpy()
    return out[0], out[1], (m[0] > 0.5).astype(np.uint8), m[1] > 0.5


def sample_batch(
    pairs: Sequence[Any],
    rng: np.random.Generator,
    *,
    batch_size: int,
    crop_size: int,
    positive_fraction: float = 0.5,
    scale_range: tuple[float, float] = (1.0, 1.0),
    synthetic: SyntheticSampler | None = None,
    paste_fraction: float = 0.0,
    nochange_fraction: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw random crops (raw units) from ``pairs``; all randomness comes from ``rng`` (reproducible).

    Pairs are chosen proportionally to their area. With probability ``positive_fraction`` a crop is placed
    around a random changed pixel (when the pair has any). ``pairs`` may mix in-memory :class:`ChangePair` and
    window-by-window :class:`~cspon_rs.training.windowed.StreamPair` (a crop is then one window read). Pairs
    smaller than the crop are zero-padded
    and the padding is marked invalid.

    Args:
        scale_range: Random resampling factor ``f`` (log-uniform): a ``crop_size * f`` crop is resampled to
            ``crop_size`` (``f`` = 2 halves the resolution, 0.5 doubles it).
        synthetic: Sampler of synthetic crops; ``paste_fraction`` / ``nochange_fraction`` of the batch
            come from it (pasted change / hard no-change).

    Returns:
        ``before (B, C, s, s)``, ``after (B, C, s, s)``, ``label (B, s, s)`` uint8, ``valid (B, s, s)`` bool.
    """
    areas = np.array([p.label.size if isinstance(p, ChangePair) else p.area for p in pairs], dtype=np.float64)
    c = _n_bands(pairs[0])
    s = crop_size
    out_a = np.zeros((batch_size, c, s, s), dtype=np.float32)
    out_b = np.zeros_like(out_a)
    out_l = np.zeros((batch_size, s, s), dtype=np.uint8)
    out_v = np.zeros((batch_size, s, s), dtype=bool)
    lo, hi = np.log(scale_range[0]), np.log(scale_range[1])
    for i in range(batch_size):
        f = float(np.exp(rng.uniform(lo, hi))) if hi > lo else 1.0
        edge = max(round(s * f / 2) * 2, 8)
        kind = rng.random()
        crop: Crop
        if synthetic is not None and kind < paste_fraction:
            crop = synthetic.pasted(rng, edge)
        elif synthetic is not None and kind < paste_fraction + nochange_fraction:
            crop = synthetic.nochange(rng, edge)
        else:
            p = pairs[int(rng.choice(len(pairs), p=areas / areas.sum()))]
            want_pos = rng.random() < positive_fraction
            if isinstance(p, ChangePair):
                crop = _crop(p, rng, edge, want_pos)
            else:  # StreamPair: one window read
                a_, b_, l_, v_ = p.crop(rng, edge, want_pos)
                crop = (a_, b_, l_, v_)
        out_a[i], out_b[i], out_l[i], out_v[i] = resize_crop(*crop, s)
    return out_a, out_b, out_l, out_v


def load_pairs_from(
    data: str | Path,
    *,
    bands: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    split: str = "test",
    label_threshold: int | None = None,
) -> list[ChangePair]:
    """Load labelled pairs from a folder or a training config, guessing the layout.

    Args:
        data: A training YAML config (its ``split`` is loaded), an OSCD folder (``A/<city>/*_B02.tif``), a
            LEVIR-style folder (``A/``, ``B/``, ``label/`` images) or a pair folder (``before*.tif``,
            ``after*.tif``, ``label.tif``).
        bands: OSCD bands to stack (default B04,B03,B02,B08); recorded names for other layouts.
        ids: Restrict to these pair ids / cities.
        split: Split of a YAML config to load.
        label_threshold: Binarise labels as value > this (folders only; a config says it per source).

    Raises:
        MissingFileError: ``data`` does not exist or has none of the known layouts.
    """
    path = Path(data)
    if not path.exists():
        raise MissingFileError(f"{path}: evaluation data not found")
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        from cspon_rs.training.config import load_train_config

        cfg = load_train_config(path)
        pairs = load_split(cfg.data, split)
        return [p for p in pairs if ids is None or p.id in ids]
    if path.is_dir() and (path / "A").is_dir() and (path / "label").is_dir():
        sub = [p for p in (path / "A").iterdir() if p.is_dir()]
        if sub and any(glob.glob(str(s / "*_B02.tif")) for s in sub):
            return load_oscd(path, ids, bands or OSCD_DEFAULT_BANDS)
        pairs = load_levir(path, ids, label_threshold=label_threshold)
        if bands:
            for p in pairs:
                p.bands = list(bands)
        return pairs
    if path.is_dir() and sorted(path.glob("before*.tif")):
        pair = load_pair_folder(path, bands)
        return [pair] if ids is None or pair.id in ids else []
    raise MissingFileError(
        f"{path}: not a known dataset layout (a train_*.yaml config, an OSCD folder with A/<city>/*_B02.tif, "
        "a LEVIR folder with A/ B/ label/, or a folder with before*.tif, after*.tif, label.tif)"
    )


def _compact(array: np.ndarray) -> np.ndarray:
    """The array in the smallest integer dtype that holds it exactly (uint8/uint16), else unchanged."""
    if array.dtype == bool or array.size == 0:
        return array
    if np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        lo, hi = float(array.min()), float(array.max())
        for dtype in (np.uint8, np.uint16):
            if lo >= 0 and hi <= np.iinfo(dtype).max:
                return array.astype(dtype)
    return array


def save_pack(
    path: str | Path,
    splits: dict[str, list[ChangePair]],
    hosts: Sequence[np.ndarray] = (),
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write loaded pairs (and synthetic host images) to one compressed ``.npz`` (lossless).

    A pack lets a run train where GDAL/rasterio are not installed (a GPU node): ``cspon-rs pack-data`` on a
    workstation, then ``cspon-rs train --pack``. Pixel arrays keep their values exactly (stored as uint8 /
    uint16 when they fit).

    Args:
        path: Output ``.npz`` path (written atomically).
        splits: ``{"train": [...], "val": [...], ...}``.
        hosts: ``(C, H, W)`` host images for synthetic pairs.
        meta: JSON-serialisable description (e.g. the data config), returned by :func:`load_pack`.
    """
    import json
    import os
    import tempfile

    arrays: dict[str, np.ndarray] = {}
    index: dict[str, Any] = {"splits": {}, "hosts": len(hosts), "meta": meta or {}}
    for split, pairs in splits.items():
        index["splits"][split] = []
        for k, p in enumerate(pairs):
            key = f"{split}{k}"
            arrays[f"{key}_before"] = _compact(p.before)
            arrays[f"{key}_after"] = _compact(p.after)
            arrays[f"{key}_label"] = p.label.astype(np.uint8)
            arrays[f"{key}_valid"] = p.valid.astype(bool)
            index["splits"][split].append(
                {"key": key, "id": p.id, "bands": p.bands, "source": p.source, "crs": p.crs, "transform": p.transform}
            )
    for k, h in enumerate(hosts):
        arrays[f"host{k}"] = _compact(h)
    arrays["index"] = np.frombuffer(json.dumps(index).encode("utf-8"), dtype=np.uint8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def load_pack(path: str | Path) -> tuple[dict[str, list[ChangePair]], list[np.ndarray], dict[str, Any]]:
    """Read a pack written by :func:`save_pack`: ``(splits, hosts, meta)``; pixels come back as float32.

    Raises:
        MissingFileError: No such file.
        LabelError: The file is not a cspon-rs pack.
    """
    import json

    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"{p}: training pack not found (make one with cspon-rs pack-data)")
    try:
        data = np.load(p, allow_pickle=False)
        index = json.loads(bytes(data["index"]).decode("utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise LabelError(f"{p}: not a cspon-rs training pack ({exc})") from exc
    splits: dict[str, list[ChangePair]] = {}
    for split, items in index["splits"].items():
        splits[split] = [
            ChangePair(
                id=it["id"],
                before=data[f"{it['key']}_before"].astype(np.float32),
                after=data[f"{it['key']}_after"].astype(np.float32),
                label=data[f"{it['key']}_label"],
                valid=data[f"{it['key']}_valid"],
                bands=list(it["bands"]),
                source=it["source"],
                crs=it["crs"],
                transform=tuple(it["transform"]) if it["transform"] is not None else None,
            )
            for it in items
        ]
    hosts = [data[f"host{k}"].astype(np.float32) for k in range(int(index["hosts"]))]
    return splits, hosts, dict(index["meta"])


def data_fingerprint(cfg: DataConfig) -> dict[str, Any]:
    """What a pack must agree on with the config that trains from it (not paths: packs travel)."""
    return {
        "sources": [
            {
                "name": s.name,
                "kind": s.kind,
                "bands": s.bands,
                "train": s.train,
                "val": s.val,
                "label_threshold": s.label_threshold,
            }
            | (  # newer fields only when set, so packs made before them still match
                {
                    "label_map": {str(k): v for k, v in s.label_map.items()} if s.label_map else None,
                    "ignore_value": s.ignore_value,
                    "band_indexes": s.band_indexes,
                }
                if s.label_map is not None or s.ignore_value is not None or s.band_indexes is not None
                else {}
            )
            for s in cfg.sources()
        ],
        "host_bands": cfg.synthetic.host_bands if cfg.synthetic else None,
    }


def make_pack(cfg: DataConfig, path: str | Path, splits: Sequence[str] = ("train", "val")) -> Path:
    """Load ``splits`` of every source, and the synthetic hosts, into one pack (see :func:`save_pack`).

    The test split is left out by default: scoring happens where the data lives, and a pack sent to another
    machine then cannot leak test pixels into training.
    """
    from cspon_rs.training.synthetic import load_host_images

    loaded = {s: load_split(cfg, s) for s in splits}
    hosts = load_host_images(cfg.synthetic.hosts, cfg.synthetic.host_bands) if cfg.synthetic else []
    return save_pack(path, loaded, hosts, {"data": data_fingerprint(cfg)})
