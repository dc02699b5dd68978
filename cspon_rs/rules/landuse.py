"""Land class before the change (地类): area of each warning by land-use class, 占用耕地, main class.

A county's land-use layer -- the 三调 / 年度变更调查 地类图斑 (DLTB) as GeoPackage, Shapefile or FileGDB with
``DLBM`` codes of GB/T 21010, or any polygon layer whose class field is named in the field mapping
(:class:`LanduseFields`) -- is read with pyogrio (only the parcels inside the warnings' bounds) and each
warning is cut by it:

* ``landuse_areas``: ``{class code: m²}`` of the warning's area by before-class; the part outside the layer
  (or in parcels without a code) is left out, so the values add up to the warning area where the layer
  covers it;
* ``cropland_m2``: 占用耕地, the part on codes starting with the table's ``cropland_prefix`` (``01``: 0101 水田,
  0102 水浇地, 0103 旱地);
* ``landuse_main``: the code with the largest area (ties: the smaller code);
* 占用永久基本农田 stays ``farmland_overlap_m2`` (overlap with the YJJBNT control line, computed by the
  rules).

Areas are planar m² in the CRS the rules measure in (:func:`cspon_rs.geo.crs.area_crs_for` of the warnings:
their own CRS when projected in metres, else the CGCS2000 Gauss-Krüger zone of their centre), so they add
up to ``area_m2``. Parcels that overlap each other (a layer that is not a clean tessellation) are counted
once: each piece of a warning goes to the first parcel (lowest row) that covers it.

Codes are checked against the GB/T 21010 table in ``configs/landuse_gbt21010.yaml``
(:func:`load_code_table`); codes not in it are kept as they are and named once in the run's messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import pandas as pd
import pyogrio
import shapely
from pydantic import Field
from pyproj import CRS, Transformer

from cspon_rs.config import StrictModel, load_yaml_config
from cspon_rs.errors import CorruptFileError, MissingFileError, SchemaError
from cspon_rs.geo.crs import SQM_PER_MU, area_crs_for
from cspon_rs.rules.config import LanduseFields

__all__ = [
    "LANDUSE_COLUMNS",
    "LandCode",
    "LandCodeTable",
    "LanduseFields",
    "LanduseLayer",
    "attach_landuse",
    "class_name",
    "landuse_breakdown",
    "landuse_text",
    "load_code_table",
    "load_landuse",
    "store_landuse",
]

#: Columns :func:`attach_landuse` adds to a warnings frame.
LANDUSE_COLUMNS: tuple[str, ...] = ("landuse_areas", "cropland_m2", "landuse_main")


class LandCode(StrictModel):
    """One second-level class of the code table."""

    name: str
    group: Literal["农用地", "建设用地", "未利用地"]


class LandCodeTable(StrictModel):
    """GB/T 21010 code table (``configs/landuse_gbt21010.yaml``)."""

    standard: str = "GB/T 21010-2017"
    cropland_prefix: str = "01"
    classes: dict[str, str] = Field(default_factory=dict)
    codes: dict[str, LandCode] = Field(default_factory=dict)

    def normalise(self, raw: Any) -> str | None:
        """The code as the table spells it: trimmed, upper case, ``101`` → ``0101`` (a numeric DBF field),
        ``0201K`` (三调 可调整地类) → ``0201``; ``None`` for an empty value. Unknown codes come back trimmed."""
        if raw is None or (isinstance(raw, float) and raw != raw):
            return None
        text = str(raw).strip().upper()
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            text = str(int(raw)).zfill(4)
        if not text:
            return None
        if text in self.codes:
            return text
        if text.endswith("K") and text[:-1] in self.codes:
            return text[:-1]
        if text.isdigit() and len(text) in (1, 3) and text.zfill(len(text) + 1) in self.codes:
            return text.zfill(len(text) + 1)
        return text

    def known(self, code: str) -> bool:
        """Whether ``code`` is a class of the table (a second-level code or a first-level class)."""
        return code in self.codes or code in self.classes

    def name(self, code: str) -> str:
        """Chinese name of a code; the first-level class for codes only known by their prefix; else the code."""
        if code in self.codes:
            return self.codes[code].name
        return self.classes.get(code, self.classes.get(code[:2], code) if len(code) > 2 else code)

    def first_level(self, code: str) -> str:
        """First-level class name (耕地, 林地, ...) of a code, or the code's own name."""
        return self.classes.get(code[:2], self.name(code))

    def is_cropland(self, code: str) -> bool:
        """耕地: a code of the table starting with ``cropland_prefix`` (01xx; an unknown 01xx code is not)."""
        return code.startswith(self.cropland_prefix) and self.known(code)


_TABLE_CACHE: dict[str, LandCodeTable] = {}


def load_code_table(path: str | Path | None = None) -> LandCodeTable:
    """Load the GB/T 21010 code table; ``None`` reads the bundled ``configs/landuse_gbt21010.yaml``.

    Raises:
        MissingFileError, ConfigError: The file is missing or invalid.
    """
    target = Path(path) if path is not None else Path(str(files("cspon_rs.configs") / "landuse_gbt21010.yaml"))
    key = str(target.resolve())
    if key not in _TABLE_CACHE:
        _TABLE_CACHE[key] = load_yaml_config(target, LandCodeTable)
    return _TABLE_CACHE[key]


@dataclass
class LanduseLayer:
    """Parcels of a land-use layer read for a run.

    Attributes:
        parcels: Column ``class_code`` (normalised) and the geometry, in the file's CRS.
        path: The file read.
        table: Code table (with ``validate_codes``) or None.
        cropland_values: 耕地 classes when there is no table.
        unknown: Codes not in the table → number of parcels.
        messages: Notes for the run summary (unknown codes named once, repaired/empty parcels).
    """

    parcels: gpd.GeoDataFrame
    path: Path
    table: LandCodeTable | None
    cropland_values: list[str] = field(default_factory=list)
    unknown: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def is_cropland(self, code: str) -> bool:
        """耕地 by the table's prefix, or by ``cropland_values``."""
        if self.table is not None:
            return self.table.is_cropland(code)
        return code in self.cropland_values

    def name(self, code: str) -> str:
        """Chinese name of a class (the class value itself without a table)."""
        return self.table.name(code) if self.table is not None else code


def _pick_layer(path: Path, wanted: str | None) -> str | None:
    try:
        names = [str(row[0]) for row in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise CorruptFileError(f"{path}: not a readable vector file ({exc})") from exc
    if wanted is not None and wanted in names:
        return wanted
    if len(names) == 1:
        return names[0]
    raise SchemaError(f"{path}: no land-use layer {wanted!r}; layers are {names}; set landuse.layer in the "
                      "field mapping (--fields)")


def load_landuse(
    path: str | Path,
    *,
    mapping: LanduseFields | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    bounds_crs: Any = None,
) -> LanduseLayer:
    """Read the parcels of a land-use layer (DLTB) with their class codes.

    Args:
        path: GeoPackage, Shapefile, FileGDB folder (``*.gdb``) or any layer pyogrio reads.
        mapping: Layer and class field (default: layer ``DLTB`` or the only layer, field ``DLBM``).
        bounds: Read only parcels intersecting this box (minx, miny, maxx, maxy) ...
        bounds_crs: ... given in this CRS (the layer's own when omitted).

    Raises:
        MissingFileError: No such file; CorruptFileError: unreadable; SchemaError: layer or class field missing.
    """
    mapping = mapping or LanduseFields()
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: land-use file not found")
    layer = _pick_layer(path, mapping.layer)
    info = pyogrio.read_info(path, layer=layer)
    fields = [str(f) for f in info["fields"]]
    if mapping.class_field not in fields:
        raise SchemaError(f"{path}: land-use class field {mapping.class_field!r} missing (layer {layer!r}, fields "
                          f"{fields}); set landuse.class_field in the field mapping (--fields)")
    layer_crs = info.get("crs") or mapping.default_crs
    if layer_crs is None:
        raise SchemaError(f"{path}: land-use layer has no CRS; add a .prj or set landuse.default_crs")
    bbox = None
    if bounds is not None:
        if bounds_crs is not None and CRS.from_user_input(bounds_crs) != CRS.from_user_input(layer_crs):
            transformer = Transformer.from_crs(bounds_crs, layer_crs, always_xy=True)
            bounds = transformer.transform_bounds(*bounds, densify_pts=21)
        bbox = tuple(float(v) for v in bounds)
    try:
        raw = pyogrio.read_dataframe(path, layer=layer, columns=[mapping.class_field], bbox=bbox)
    except Exception as exc:
        raise CorruptFileError(f"{path}: cannot read land-use layer {layer!r} ({exc})") from exc
    if raw.crs is None:
        raw = raw.set_crs(layer_crs)
    table = load_code_table(mapping.code_table) if mapping.validate_codes else None
    codes: list[str | None] = []
    unknown: dict[str, int] = {}
    for value in raw[mapping.class_field].tolist():
        if table is not None:
            code = table.normalise(value)
            if code is not None and not table.known(code):
                unknown[code] = unknown.get(code, 0) + 1
        else:
            code = None if value is None or str(value).strip() == "" else str(value).strip()
        codes.append(code)
    geoms = shapely.make_valid(raw.geometry.values)
    polygonal = [g if g is not None and g.geom_type in ("Polygon", "MultiPolygon")
                 else (shapely.union_all([p for p in shapely.get_parts(g) if p.geom_type in ("Polygon",
                                                                                            "MultiPolygon")])
                       if g is not None else None) for g in geoms]
    parcels = gpd.GeoDataFrame({"class_code": codes}, geometry=polygonal, crs=raw.crs)
    parcels = parcels[parcels.geometry.notna() & ~parcels.geometry.is_empty & parcels["class_code"].notna()]
    messages: list[str] = []
    if unknown:
        listed = ", ".join(f"{c} ({n})" for c, n in sorted(unknown.items()))
        messages.append(f"{path.name}: land-use codes not in {table.standard if table else 'the table'}: {listed} "
                        "(areas kept under these codes; check the DLBM field)")
    n_empty = len(raw) - len(parcels)
    if n_empty:
        messages.append(f"{path.name}: {n_empty} land-use parcel(s) without a class code or polygon left out")
    return LanduseLayer(parcels=parcels.reset_index(drop=True), path=path, table=table,
                        cropland_values=list(mapping.cropland_values), unknown=unknown, messages=messages)


def landuse_breakdown(warnings: gpd.GeoDataFrame, landuse: LanduseLayer) -> pd.DataFrame:
    """Area of each warning by before-class, 占用耕地 and the main class.

    Args:
        warnings: Warnings (any CRS; areas measured in :func:`~cspon_rs.geo.crs.area_crs_for` of them).
        landuse: Parcels from :func:`load_landuse`.

    Returns:
        A frame on ``warnings.index`` with :data:`LANDUSE_COLUMNS`: ``landuse_areas`` (dict code → m²,
        rounded to 0.01, largest first), ``cropland_m2`` (m²) and ``landuse_main`` (code, None when the
        warning lies outside the layer).
    """
    if not len(warnings):
        return pd.DataFrame(index=warnings.index, columns=list(LANDUSE_COLUMNS), dtype=object)
    work = area_crs_for(warnings)
    geoms = warnings.geometry.to_crs(work)
    parcels = landuse.parcels.to_crs(work) if len(landuse.parcels) else landuse.parcels
    tree = shapely.STRtree(parcels.geometry.values) if len(parcels) else None
    codes = parcels["class_code"].tolist() if len(parcels) else []
    by_class: list[dict[str, float]] = []
    cropland: list[float] = []
    main: list[str | None] = []
    for geom in geoms:
        areas: dict[str, float] = {}
        if tree is not None and geom is not None and not geom.is_empty:
            remaining = geom
            for j in sorted(int(v) for v in tree.query(geom, predicate="intersects")):
                if remaining.is_empty:
                    break
                piece = shapely.intersection(remaining, parcels.geometry.iat[j])
                area = float(piece.area)
                if area <= 0:
                    continue
                areas[codes[j]] = areas.get(codes[j], 0.0) + area
                remaining = shapely.difference(remaining, piece)
        ordered = dict(sorted(((c, round(a, 2)) for c, a in areas.items()), key=lambda kv: (-kv[1], kv[0])))
        by_class.append(ordered)
        cropland.append(round(sum(a for c, a in areas.items() if landuse.is_cropland(c)), 2))
        main.append(next(iter(ordered), None))
    return pd.DataFrame({"landuse_areas": pd.Series(by_class, index=warnings.index, dtype=object),
                         "cropland_m2": cropland, "landuse_main": main}, index=warnings.index)


def attach_landuse(warnings: gpd.GeoDataFrame, landuse: LanduseLayer) -> gpd.GeoDataFrame:
    """``warnings`` with the :data:`LANDUSE_COLUMNS` of :func:`landuse_breakdown` (a copy)."""
    result = warnings.copy()
    breakdown = landuse_breakdown(warnings, landuse)
    for column in LANDUSE_COLUMNS:
        result[column] = breakdown[column].tolist() if len(result) else []
    return result


def _areas(value: Any) -> dict[str, float]:
    if isinstance(value, str) and value.startswith("{"):
        value = json.loads(value)
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if v is not None}


def class_name(code: Any, table: LandCodeTable | None = None) -> str | None:
    """``0103 旱地`` for a stored code (None for none)."""
    if code is None or (isinstance(code, float) and code != code) or code == "":
        return None
    table = table or load_code_table()
    name = table.name(str(code))
    return f"{code} {name}" if name != str(code) else str(code)


def landuse_text(value: Any, table: LandCodeTable | None = None, *, unit: Literal["m2", "mu"] = "m2") -> str:
    """Areas by first-level class as one line, largest first, e.g. ``耕地 1,200 m²；林地 300 m²``."""
    areas = _areas(value)
    if not areas:
        return ""
    table = table or load_code_table()
    by_class: dict[str, float] = {}
    for code, area in areas.items():
        label = table.first_level(code) if table.known(code) else code
        by_class[label] = by_class.get(label, 0.0) + area
    if unit == "mu":
        return "；".join(f"{k} {v / SQM_PER_MU:,.2f} 亩" for k, v in sorted(by_class.items(), key=lambda kv: -kv[1]))
    return "；".join(f"{k} {v:,.0f} m²" for k, v in sorted(by_class.items(), key=lambda kv: -kv[1]))


def store_landuse(session: Any, warnings: gpd.GeoDataFrame, *, only: set[str] | None = None) -> list[str]:
    """Fill the land class of stored warnings that have none yet (a period re-run with ``--landuse``), from a
    frame with ``warning_id`` and :data:`LANDUSE_COLUMNS`; values already stored are kept. One transaction.

    Returns:
        The ids updated.
    """
    from cspon_rs.store.models import WarningHistory, WarningRecord

    updated: list[str] = []
    rows = warnings[[c for c in ("warning_id", *LANDUSE_COLUMNS) if c in warnings.columns]]
    for record in rows.itertuples(index=False):
        warning_id = getattr(record, "warning_id", None)
        if warning_id is None or (only is not None and warning_id not in only):
            continue
        areas = getattr(record, "landuse_areas", None)
        stored = session.get(WarningRecord, warning_id)
        if stored is None or stored.landuse_areas is not None or not isinstance(areas, dict):
            continue
        stored.landuse_areas = {str(k): float(v) for k, v in areas.items()}
        stored.cropland_m2 = float(record.cropland_m2) if record.cropland_m2 is not None else None
        stored.landuse_main = record.landuse_main
        stored.history.append(WarningHistory(event="landuse", by="cspon-rs", from_status=stored.status,
                                             to_status=stored.status, why="land class from the land-use layer",
                                             details={"landuse_main": record.landuse_main,
                                                      "cropland_m2": stored.cropland_m2}))
        updated.append(str(warning_id))
    session.commit()
    return updated
