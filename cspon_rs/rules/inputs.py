"""Loading change patches, permits, control lines and townships into canonical columns.

Bureau layers use field codes (PZWH, ZT, ...) and Chinese values (已批, 待批, ...); the mapping in
:class:`~cspon_rs.rules.config.FieldsConfig` turns them into the canonical columns the rules use.
The user's files are only read, never modified or renamed. Geometries keep the file's CRS (the rules
reproject everything into one projected CRS themselves).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from cspon_rs.errors import CorruptFileError, MissingFileError, SchemaError
from cspon_rs.geo.vector import read_vector, repair_geometries
from cspon_rs.rules.config import (
    CONTROL_KINDS,
    PERMIT_STATUSES,
    PERMIT_TYPES,
    ControlLineFields,
    PermitFields,
    TownshipFields,
)

__all__ = [
    "PATCH_COLUMNS",
    "PERMIT_COLUMNS",
    "SHAPEFILE_ENCODINGS",
    "drop_suppressed",
    "load_control_lines",
    "load_patches",
    "load_permits",
    "load_townships",
    "parse_date",
]

#: Columns of the ``change_patches`` layer written by the inference step.
PATCH_COLUMNS: tuple[str, ...] = (
    "patch_id", "area_m2", "area_mu", "prob_mean", "prob_max", "centroid_lon", "centroid_lat",
    "t1", "t2", "scene_before", "scene_after", "detector",
)
#: Canonical permit columns returned by :func:`load_permits` (plus ``source_row`` and ``geometry``).
PERMIT_COLUMNS: tuple[str, ...] = (
    "permit_no", "permit_type", "project", "applicant", "approved_on", "expires_on", "approved_area_m2",
    "status",
)

_DATE_PATTERNS = (
    re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})"),
    re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})"),
    re.compile(r"^(\d{4})\.(\d{1,2})\.(\d{1,2})"),
    re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日?"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if value is pd.NaT:
        return True
    return isinstance(value, str) and value.strip() == ""


def parse_date(value: Any) -> dt.date | None:
    """Parse a date value from a bureau table.

    Accepts ``date``/``datetime``/``Timestamp`` objects and strings ``YYYY-MM-DD``, ``YYYY/MM/DD``,
    ``YYYY.MM.DD``, ``YYYYMMDD`` and ``YYYY年MM月DD日`` (a time part is ignored). Missing values
    (None, NaN, empty string) give ``None``.

    Raises:
        ValueError: The value is present but is not a date.
    """
    if _is_missing(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for pattern in _DATE_PATTERNS:
        match = pattern.match(text)
        if match:
            year, month, day = (int(g) for g in match.groups())
            return dt.date(year, month, day)  # raises ValueError for 2018-02-30
    raise ValueError(f"not a date: {value!r}")


def _date_column(frame: pd.DataFrame, column: str, path: Path, canonical: str) -> list[dt.date | None]:
    out: list[dt.date | None] = []
    for row, value in enumerate(frame[column].tolist(), start=1):
        try:
            out.append(parse_date(value))
        except ValueError as exc:
            raise SchemaError(
                f"{path}: field {column!r} ({canonical}) row {row}: cannot parse date {value!r} "
                "(use YYYY-MM-DD)"
            ) from exc
    return out


def _text(value: Any) -> str | None:
    return None if _is_missing(value) else str(value).strip()


def _map_value(value: str, mapping: dict[str, str], allowed: tuple[str, ...]) -> str | None:
    if value in mapping:
        return mapping[value]
    lowered = value.lower().replace("-", "_").replace(" ", "_")
    if lowered in allowed:
        return lowered
    for key, target in mapping.items():
        if key.lower() == value.lower():
            return target
    return None


def _layer_names(path: Path) -> list[str]:
    try:
        return [str(row[0]) for row in pyogrio.list_layers(path)]
    except Exception as exc:
        raise CorruptFileError(f"{path}: not a readable vector file ({exc})") from exc


def _read(path: str | Path, layer: str | None, default_crs: str | None) -> gpd.GeoDataFrame:
    """Read a layer; Shapefiles without ``.cpg`` get their text encoding detected; coordinates must be finite."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: file not found")
    if layer is not None and layer not in _layer_names(path):
        # A single-layer file (Shapefile, GeoJSON) whose only layer has another name is fine.
        names = _layer_names(path)
        if len(names) == 1:
            layer = None
        else:
            raise CorruptFileError(f"{path}: no layer {layer!r}; layers are {names}")
    if path.suffix.lower() == ".shp" and not _cpg_of(path):
        gdf = _read_shapefile_detecting_encoding(path, default_crs)
    else:
        gdf = read_vector(path, layer=layer, default_crs=default_crs)
    _check_finite(gdf, path)
    return gdf


#: Encodings tried, in order, for a Shapefile's attribute table when it has no ``.cpg``.
SHAPEFILE_ENCODINGS: tuple[str, ...] = ("UTF-8", "GBK")


def _cpg_of(shp: Path) -> Path | None:
    """The ``.cpg`` (code page) file next to a Shapefile, any suffix case."""
    for candidate in shp.parent.glob(f"{shp.stem}.*"):
        if candidate.suffix.lower() == ".cpg":
            return candidate
    return None


def _read_shapefile_detecting_encoding(path: Path, default_crs: str | None) -> gpd.GeoDataFrame:
    """Read a Shapefile without ``.cpg``: its ``.dbf`` text must decode strictly as UTF-8, else as GBK.

    Without a ``.cpg`` GDAL falls back to Latin-1, which turns Chinese field values into mojibake (and
    permit numbers that never match). The layer is read as Latin-1 -- a lossless byte-for-character
    mapping -- and every field name and text value is then decoded strictly with each candidate in
    :data:`SHAPEFILE_ENCODINGS`; the first that decodes all of them is used.

    Raises:
        SchemaError: The text is neither valid UTF-8 nor GBK (the message says to add a ``.cpg``).
        CorruptFileError: GDAL cannot read the file.
    """
    from cspon_rs.errors import CRSError

    try:
        raw = gpd.read_file(path, engine="pyogrio", encoding="ISO-8859-1")
    except Exception as exc:  # pyogrio raises DataSourceError, DataLayerError, ... for bad files
        raise CorruptFileError(f"{path}: not a readable vector layer ({exc})") from exc
    geometry = raw.geometry.name
    text_columns = [c for c in raw.columns if c != geometry and any(isinstance(v, str) for v in raw[c])]
    for encoding in SHAPEFILE_ENCODINGS:
        try:
            names = {str(c): str(c).encode("latin-1").decode(encoding) for c in raw.columns if c != geometry}
            columns = {
                c: [v.encode("latin-1").decode(encoding) if isinstance(v, str) else v for v in raw[c]]
                for c in text_columns
            }
        except UnicodeError:
            continue
        gdf = raw.assign(**columns).rename(columns=names)
        if gdf.crs is None:
            if default_crs is None:
                raise CRSError(f"{path}: layer has no CRS; write a .prj / set one, or pass a default CRS")
            gdf = gdf.set_crs(default_crs)
        gdf.attrs["encoding"] = encoding
        return gdf
    raise SchemaError(
        f"{path}: the attribute table ({path.with_suffix('.dbf').name}) is neither UTF-8 nor GBK text and there "
        f"is no {path.stem}.cpg; add a .cpg file naming its encoding (e.g. one line: GB18030, BIG5 or UTF-8)"
    )


def _check_finite(gdf: gpd.GeoDataFrame, path: Path) -> None:
    """Raise :class:`SchemaError` naming the features (1-based) with NaN or infinite coordinates."""
    if not len(gdf):
        return
    coords, index = shapely.get_coordinates(gdf.geometry.values, return_index=True)  # x, y
    bad = np.unique(index[~np.isfinite(coords).all(axis=1)]) if len(coords) else np.array([], dtype=int)
    if len(bad):
        rows = ", ".join(str(int(i) + 1) for i in bad[:10]) + (f" (and {len(bad) - 10} more)" if len(bad) > 10 else "")
        raise SchemaError(
            f"{path}: feature(s) {rows} have NaN or infinite coordinates; fix or delete those features"
        )


def load_permits(
    path: str | Path, *, layer: str | None = None, mapping: PermitFields | None = None
) -> gpd.GeoDataFrame:
    """Read a permit layer and map its fields to the canonical permit columns.

    Canonical columns: ``permit_no`` (批准文号), ``permit_type`` (land_use_approval | land_supply |
    planning_permit | temporary_use | facility_agricultural | other), ``project``, ``applicant``,
    ``approved_on`` / ``expires_on`` (``datetime.date`` or None), ``approved_area_m2`` (m², float or NaN),
    ``status`` (pending | approved | revoked | expired), ``source_row`` (1-based feature number in the
    file) and the geometry in the file's CRS. Chinese type/status values are mapped with
    ``mapping.type_values`` / ``mapping.status_values``. A missing status is derived: ``approved`` when
    an approval date is present, otherwise ``pending``.

    Invalid geometries (self-intersections...) are repaired; each repair or dropped empty feature is
    reported in ``gdf.attrs["messages"]`` (a list of strings naming the file and feature).

    Args:
        path: GeoPackage, Shapefile, GeoJSON... (any CRS; a file without CRS gets ``mapping.default_crs``).
        layer: Layer name; defaults to ``mapping.layer`` (falls back to the only layer of the file).
        mapping: Field mapping; the bundled default (bureau codes PZWH, LX, ...) when omitted.

    Raises:
        MissingFileError: No such file.
        SchemaError: A required field is missing (the message names the fields and the file), or a date,
            status or permit number value cannot be parsed (row number and value named).
    """
    mapping = mapping or PermitFields()
    path = Path(path)
    gdf = _read(path, layer if layer is not None else mapping.layer, mapping.default_crs)
    fields: dict[str, str | None] = {str(k): v for k, v in mapping.fields.items()}
    missing = [
        f"{canonical} ({fields.get(canonical)})"
        for canonical in mapping.required
        if fields.get(canonical) is None or fields[canonical] not in gdf.columns
    ]
    if missing:
        raise SchemaError(
            f"{path}: required permit field(s) missing: {', '.join(missing)}; fields present are "
            f"{[c for c in gdf.columns if c != gdf.geometry.name]} (fix the file or the field mapping)"
        )
    status_map = {**_DEFAULT_STATUS, **mapping.status_values}
    type_map = {**_DEFAULT_TYPES, **mapping.type_values}

    def col(canonical: str) -> list[Any]:
        name = fields.get(canonical)
        if name is None or name not in gdf.columns:
            return [None] * len(gdf)
        return list(gdf[name].tolist())

    out = pd.DataFrame(index=gdf.index)
    numbers = [_text(v) for v in col("permit_no")]
    for row, number in enumerate(numbers, start=1):
        if number is None and "permit_no" in mapping.required:
            raise SchemaError(
                f"{path}: field {fields['permit_no']!r} (permit_no) row {row}: empty permit number"
            )
    out["permit_no"] = [n if n is not None else f"row-{i}" for i, n in enumerate(numbers, start=1)]
    types = []
    for raw in col("permit_type"):
        text = _text(raw)
        types.append("other" if text is None else (_map_value(text, type_map, PERMIT_TYPES) or "other"))
    out["permit_type"] = types
    out["project"] = [_text(v) for v in col("project")]
    out["applicant"] = [_text(v) for v in col("applicant")]
    for canonical in ("approved_on", "expires_on"):
        name = fields.get(canonical)
        if name is not None and name in gdf.columns:
            out[canonical] = _date_column(gdf, name, path, canonical)
        else:
            out[canonical] = [None] * len(gdf)
    areas = []
    for row, raw in enumerate(col("approved_area_m2"), start=1):
        if _is_missing(raw):
            areas.append(float("nan"))
            continue
        try:
            areas.append(float(raw))
        except (TypeError, ValueError) as exc:
            raise SchemaError(
                f"{path}: field {fields['approved_area_m2']!r} (approved_area_m2) row {row}: "
                f"not a number: {raw!r}"
            ) from exc
    out["approved_area_m2"] = areas
    statuses = []
    for row, (raw, approved) in enumerate(zip(col("status"), out["approved_on"], strict=True), start=1):
        text = _text(raw)
        if text is None:
            statuses.append("approved" if approved is not None else "pending")
            continue
        value = _map_value(text, status_map, PERMIT_STATUSES)
        if value is None:
            raise SchemaError(
                f"{path}: field {fields['status']!r} (status) row {row}: unknown status {text!r}; "
                f"use one of {list(PERMIT_STATUSES)} or add it to status_values in the field mapping"
            )
        statuses.append(value)
    out["status"] = statuses
    out["source_row"] = range(1, len(gdf) + 1)
    result = gpd.GeoDataFrame(out, geometry=gdf.geometry.values, crs=gdf.crs)
    repaired, messages = repair_geometries(result, what=str(path))
    repaired = repaired.reset_index(drop=True)
    repaired.attrs["messages"] = messages
    repaired.attrs["source"] = str(path)
    return repaired


def load_control_lines(
    path: str | Path, *, mapping: ControlLineFields | None = None
) -> gpd.GeoDataFrame:
    """Read control lines (永久基本农田 YJJBNT, 生态保护红线 STBHHX, 城镇开发边界 CZKFBJ).

    Either one layer per kind (``mapping.layers``: layer name -> kind; absent layers are skipped) or one
    layer ``mapping.type_layer`` whose ``mapping.type_field`` holds the kind (codes or Chinese names via
    ``mapping.type_values``).

    Returns:
        Columns ``kind`` (YJJBNT | STBHHX | CZKFBJ), ``county_code``, ``version``, ``valid_from``
        (``datetime.date`` or None) and the geometry, all in the CRS of the first layer read.

    Raises:
        SchemaError: None of the expected layers exists, the type field is missing, a kind is unknown,
            or a VALID_FROM date cannot be parsed (row named).
    """
    mapping = mapping or ControlLineFields()
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: control-line file not found")
    names = _layer_names(path)
    kind_map = {**_DEFAULT_KINDS, **mapping.type_values}
    frames: list[tuple[str, gpd.GeoDataFrame, list[str]]] = []
    if mapping.type_layer is not None or not any(n in names for n in mapping.layers):
        layer = mapping.type_layer
        if layer is None and len(names) != 1:
            raise SchemaError(
                f"{path}: none of the control-line layers {list(mapping.layers)} found (layers are {names}); "
                "set control_lines.layers or control_lines.type_layer/type_field in the field mapping"
            )
        gdf = _read(path, layer, mapping.default_crs)
        if mapping.type_field not in gdf.columns:
            raise SchemaError(
                f"{path}: control-line type field {mapping.type_field!r} missing (layers are {names}, "
                f"fields {list(gdf.columns)})"
            )
        kinds = []
        for row, raw in enumerate(gdf[mapping.type_field].tolist(), start=1):
            text = _text(raw) or ""
            kind = kind_map.get(text, text if text in CONTROL_KINDS else None)
            if kind is None:
                raise SchemaError(
                    f"{path}: field {mapping.type_field!r} row {row}: unknown control-line type {raw!r}; "
                    f"use {list(CONTROL_KINDS)} or add it to control_lines.type_values"
                )
            kinds.append(kind)
        frames.append((str(layer), gdf, kinds))
    else:
        for layer_name, kind in mapping.layers.items():
            if layer_name in names:
                gdf = _read(path, layer_name, mapping.default_crs)
                frames.append((layer_name, gdf, [kind] * len(gdf)))
    target_crs = frames[0][1].crs if frames else None
    parts = []
    messages: list[str] = []
    for layer_name, gdf, kinds in frames:
        if target_crs is not None and gdf.crs != target_crs and len(gdf):
            gdf = gdf.to_crs(target_crs)
        part = pd.DataFrame(index=gdf.index)
        part["kind"] = kinds
        for canonical, field in (("county_code", mapping.county_field), ("version", mapping.version_field)):
            present = field is not None and field in gdf.columns
            part[canonical] = [_text(v) for v in gdf[field].tolist()] if present else [None] * len(gdf)
        if mapping.valid_from_field and mapping.valid_from_field in gdf.columns:
            part["valid_from"] = _date_column(gdf, mapping.valid_from_field, Path(f"{path}:{layer_name}"),
                                              "valid_from")
        else:
            part["valid_from"] = [None] * len(gdf)
        frame = gpd.GeoDataFrame(part, geometry=gdf.geometry.values, crs=gdf.crs)
        fixed, notes = repair_geometries(frame, what=f"{path}:{layer_name}")
        messages.extend(notes)
        parts.append(fixed)
    if parts:
        result = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=target_crs)
    else:
        result = gpd.GeoDataFrame(
            {"kind": [], "county_code": [], "version": [], "valid_from": []}, geometry=[],
            crs=mapping.default_crs,
        )
    result.attrs["messages"] = messages
    return result


def load_townships(path: str | Path, *, mapping: TownshipFields | None = None) -> gpd.GeoDataFrame:
    """Read a township layer into columns ``township_code``, ``township_name`` and the geometry.

    Raises:
        SchemaError: The code field is missing.
    """
    mapping = mapping or TownshipFields()
    path = Path(path)
    gdf = _read(path, mapping.layer, mapping.default_crs)
    if mapping.code_field not in gdf.columns:
        raise SchemaError(f"{path}: township code field {mapping.code_field!r} missing; fields are "
                          f"{[c for c in gdf.columns if c != gdf.geometry.name]}")
    out = pd.DataFrame(index=gdf.index)
    out["township_code"] = [_text(v) for v in gdf[mapping.code_field].tolist()]
    out["township_name"] = (
        [_text(v) for v in gdf[mapping.name_field].tolist()]
        if mapping.name_field and mapping.name_field in gdf.columns
        else [None] * len(gdf)
    )
    fixed, messages = repair_geometries(gpd.GeoDataFrame(out, geometry=gdf.geometry.values, crs=gdf.crs),
                                        what=str(path))
    fixed = fixed.reset_index(drop=True)
    fixed.attrs["messages"] = messages
    return fixed


def load_patches(
    path: str | Path, *, layer: str = "change_patches", include_suppressed: bool = False
) -> gpd.GeoDataFrame:
    """Read the ``change_patches`` layer written by the inference step and check its columns.

    Patches the detector's false-alarm suppression flagged (``suppressed_by`` not null, see
    :mod:`cspon_rs.inference.suppress`) are left out unless ``include_suppressed``: they never become
    warnings. ``attrs["messages"]`` then says how many were left out and why.

    Returns:
        The layer with ``t1``/``t2`` parsed to ``datetime.date`` and ``patch_id`` as str, in its own CRS.

    Raises:
        SchemaError: A column of :data:`PATCH_COLUMNS` is missing or a date cannot be parsed.
    """
    path = Path(path)
    gdf = _read(path, layer, None)
    missing = [c for c in PATCH_COLUMNS if c not in gdf.columns]
    if missing:
        raise SchemaError(
            f"{path}: change-patch column(s) missing: {missing} (expected {list(PATCH_COLUMNS)})"
        )
    gdf = gdf.copy()
    gdf["patch_id"] = gdf["patch_id"].astype(str)
    gdf["t1"] = _date_column(gdf, "t1", path, "t1")
    gdf["t2"] = _date_column(gdf, "t2", path, "t2")
    fixed, messages = repair_geometries(gdf, what=str(path))
    fixed = fixed.reset_index(drop=True)
    fixed.attrs["messages"] = messages
    return fixed if include_suppressed else drop_suppressed(fixed)


def drop_suppressed(patches: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The patches no suppression cue flagged (``suppressed_by`` null or empty); all of them without the column.

    ``attrs["messages"]`` is kept and gains one line counting the patches left out per cue.
    """
    messages = list(patches.attrs.get("messages", []))
    if "suppressed_by" not in patches.columns or not len(patches):
        return patches
    flag = patches["suppressed_by"]
    cue = flag.where(flag.notna(), "").astype(str).str.strip()
    out = patches.loc[cue == ""].reset_index(drop=True)
    dropped = cue[cue != ""].value_counts()
    if len(dropped):
        counts = ", ".join(f"{name} {int(n)}" for name, n in dropped.items())
        messages.append(f"{int(dropped.sum())} change patch(es) suppressed by the detector as unlikely "
                        f"construction ({counts}) are not warnings")
    out.attrs["messages"] = messages
    return out


def _load_default_maps() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    from cspon_rs.rules.config import load_fields_config

    try:
        cfg = load_fields_config()
    except Exception:  # a broken bundled file must not break imports; defaults below still apply
        return {}, {}, {}
    return (dict(cfg.permits.status_values), dict(cfg.permits.type_values),
            dict(cfg.control_lines.type_values))


_DEFAULT_STATUS, _DEFAULT_TYPES, _DEFAULT_KINDS = _load_default_maps()
