"""The 图斑 layer bureaus file upward: GeoPackage (1.2/1.3) and ESRI Shapefile with a ``.cpg``.

:func:`tuban_frame` computes every ``source`` column a schema may name (:data:`SOURCE_COLUMNS`) from a
warnings frame -- classified rows with ``warning_id`` or :func:`cspon_rs.store.crud.warnings_frame`, with
field results attached by :func:`cspon_rs.exports.fieldresults.attach_field_results` -- and
:func:`write_tuban` writes the schema's fields, in the schema's order, in the chosen output CRS.

Areas: ``area_m2`` is the planar area in the CGCS2000 Gauss-Krüger zone of the layer centre and
``ellipsoid_m2`` the area on the CGCS2000 ellipsoid (see :mod:`cspon_rs.geo.areas`); ``gk_x``/``gk_y`` the
centroid in that GK zone (easting with zone prefix, northing; metres), ``centroid_lon/lat`` in EPSG:4490.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyogrio.raw import write as ogr_write
from pyproj import CRS

from cspon_rs.errors import ConfigError, SchemaError
from cspon_rs.exports.dbf import DbfField, declare_text_widths, write_dbf
from cspon_rs.exports.fileio import atomic_path, publish
from cspon_rs.exports.schema import (
    RESULT_ZH,
    STATUS_ZH,
    ExportSchema,
    county_name,
    load_export_schema,
    local_time_text,
)
from cspon_rs.geo.areas import AREA_METHOD, CGCS2000, OutCRS, ellipsoidal_area_m2, gk_crs_for, resolve_out_crs
from cspon_rs.geo.crs import SQM_PER_MU
from cspon_rs.rules.config import CATEGORY_ZH

__all__ = ["SHP_SUFFIXES", "SOURCE_COLUMNS", "tuban_frame", "write_tuban", "zip_shapefile"]

#: Columns :func:`tuban_frame` provides for a schema's ``source``.
SOURCE_COLUMNS: tuple[str, ...] = (
    "warning_id", "county_code", "county_name", "township_code", "township_name", "period", "t1", "t2",
    "category", "category_zh", "flags", "area_m2", "area_mu", "ellipsoid_m2", "ellipsoid_mu", "gk_x", "gk_y",
    "gk_epsg", "centroid_lon", "centroid_lat", "farmland_overlap_m2", "redline_overlap_m2", "outside_urban_m2",
    "excess_m2", "permit_nos", "reason_zh", "reason_en", "confidence", "priority", "rank", "status",
    "status_zh", "suspected_zh", "verification_result", "result_zh", "actual_use", "assigned_team", "due_date",
    "verified_at", "verified_by", "photo_count", "remarks",
    "cropland_m2", "cropland_mu", "landuse_main", "landuse_main_zh", "landuse_zh", "issued_no",
    "land_user", "project_name", "construction_status_zh", "violation_type", "rectification_zh", "case_steps_zh",
    "case_document_count", "change_type_zh",
)
#: Files of one Shapefile.
SHP_SUFFIXES: tuple[str, ...] = (".shp", ".shx", ".dbf", ".prj", ".cpg")

_PY_ENCODING = {"UTF-8": "utf-8", "GBK": "gbk", "GB18030": "gb18030", "CP936": "gbk"}


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return str(value)


def _reasons(value: Any, key: str, sep: str) -> str:
    if isinstance(value, str) and value.startswith("["):
        value = json.loads(value)
    if not isinstance(value, list | tuple):
        return ""
    return sep.join(str(r.get(key, "")) for r in value if isinstance(r, dict))


def _permit_nos(value: Any) -> str:
    if isinstance(value, str):
        value = json.loads(value) if value.startswith("[") else [{"permit_no": value}]
    return ", ".join(dict.fromkeys(str(p.get("permit_no")) for p in (value or []) if isinstance(p, dict)))


def _date(value: Any) -> dt.date | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, dt.datetime | pd.Timestamp):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _remarks(row: pd.Series) -> str:
    parts = []
    flags = row.get("flags")
    if isinstance(flags, str):
        flags = json.loads(flags) if flags.startswith("[") else [f.strip() for f in flags.split(",") if f.strip()]
    if flags:
        parts.append("管控线: " + "、".join(str(f) for f in flags))
    if row.get("verification_result") is None:
        parts.append("疑似, 待实地核查")
    notes = _text(row.get("verification_notes"))
    if notes:
        parts.append(notes)
    return "；".join(parts)


def tuban_frame(warnings: gpd.GeoDataFrame, schema: ExportSchema | None = None) -> gpd.GeoDataFrame:
    """Every :data:`SOURCE_COLUMNS` column for each row of ``warnings`` (geometry kept, CRS unchanged).

    Args:
        warnings: Warnings with ``warning_id`` (or ``id``/``source_key``) in any CRS inside China.
        schema: For county names and the display time zone (default schema when omitted).

    Raises:
        CRSError: No CRS, or the layer lies outside the CGCS2000 GK zones.
    """
    schema = schema or load_export_schema()
    zone = schema.zone()
    src = warnings.copy()
    n = len(src)
    out = gpd.GeoDataFrame(index=src.index, geometry=src.geometry, crs=src.crs)

    def col(name: str, default: Any = None) -> list[Any]:
        return list(src[name]) if name in src.columns else [default] * n

    ids = col("warning_id")
    fallback = col("id") if "id" in src.columns else col("source_key")
    out["warning_id"] = [_text(a) or _text(b) for a, b in zip(ids, fallback, strict=True)]
    out["county_code"] = [_text(v) for v in col("county_code")]
    out["county_name"] = [county_name(schema, c) for c in out["county_code"]]
    for name in ("township_code", "township_name", "period", "category", "actual_use", "assigned_team",
                 "verified_by", "verification_result", "issued_no", "land_user", "project_name",
                 "construction_status_zh", "violation_type", "rectification_zh", "case_steps_zh"):
        out[name] = [_text(v) for v in col(name)]
    out["category_zh"] = [CATEGORY_ZH.get(c or "", c) for c in out["category"]]
    out["flags"] = [", ".join(f) if isinstance(f, list | tuple) else (_text(f) or "") for f in col("flags", [])]
    for name in ("t1", "t2", "due_date"):
        out[name] = [_date(v) for v in col(name)]
    geoms = gpd.GeoSeries(src.geometry.values, crs=src.crs)
    if n:
        gk = gk_crs_for(geoms)
        in_gk = geoms.to_crs(gk)
        planar = np.asarray(in_gk.area, dtype=np.float64)
        centres = in_gk.centroid
        lonlat = centres.to_crs(CGCS2000)
        out["gk_x"], out["gk_y"] = np.round(centres.x.to_numpy(), 3), np.round(centres.y.to_numpy(), 3)
        out["gk_epsg"] = f"EPSG:{gk.to_epsg()}"
        out["centroid_lon"], out["centroid_lat"] = lonlat.x.round(7).to_numpy(), lonlat.y.round(7).to_numpy()
    else:
        planar = np.zeros(0)
        for name in ("gk_x", "gk_y", "centroid_lon", "centroid_lat"):
            out[name] = np.zeros(0)
        out["gk_epsg"] = []
    ellipsoid = ellipsoidal_area_m2(geoms)
    out["area_m2"] = np.round(planar, 2)
    out["area_mu"] = np.round(planar / SQM_PER_MU, 4)
    out["ellipsoid_m2"] = np.round(ellipsoid, 2)
    out["ellipsoid_mu"] = np.round(ellipsoid / SQM_PER_MU, 4)
    for name in ("farmland_overlap_m2", "redline_overlap_m2", "outside_urban_m2", "excess_m2", "confidence",
                 "priority"):
        out[name] = pd.to_numeric(pd.Series(col(name), index=src.index), errors="coerce").astype(float)
    out["rank"] = pd.to_numeric(pd.Series(col("rank"), index=src.index), errors="coerce").astype("Int64")
    out["permit_nos"] = [_text(a) or _permit_nos(b) for a, b in zip(col("permit_nos"), col("permits"), strict=True)]
    out["reason_zh"] = [_text(a) or _reasons(b, "zh", "；") for a, b in zip(col("reason_zh"), col("reasons"),
                                                                           strict=True)]
    out["reason_en"] = [_text(a) or _reasons(b, "en", "; ") for a, b in zip(col("reason_en"), col("reasons"),
                                                                           strict=True)]
    out["status"] = [_text(v) or "new" for v in col("status")]
    out["status_zh"] = [STATUS_ZH.get(s, s) for s in out["status"]]
    out["result_zh"] = [RESULT_ZH.get(r, r) if r else "未核查" for r in out["verification_result"]]
    out["suspected_zh"] = ["疑似" if r is None else "已核查" for r in out["verification_result"]]
    out["verified_at"] = [local_time_text(v, zone) for v in col("verified_at")]
    out["photo_count"] = [int(v) if v is not None and not pd.isna(v) else 0 for v in col("photo_count", 0)]
    out["case_document_count"] = [int(v) if v is not None and not pd.isna(v) else 0
                                  for v in col("case_document_count", 0)]
    _landuse_columns(out, col("landuse_areas"), col("cropland_m2"), col("landuse_main"), src.index)
    out["change_type_zh"] = [change_type(c, m, t) for c, m, t in zip(out["category"], out["landuse_main"],
                                                                    _issued_types(col("reasons")), strict=True)]
    rows = src.assign(verification_result=out["verification_result"], flags=col("flags", []))
    out["remarks"] = [_remarks(r) for _, r in rows.iterrows()]
    return out


def _issued_types(reasons: list[Any]) -> list[str | None]:
    """The issuer's change type kept in the reason of an ``issued`` warning (:mod:`cspon_rs.store.issued`)."""
    out: list[str | None] = []
    for value in reasons:
        if isinstance(value, str) and value.startswith("["):
            value = json.loads(value)
        found = [r.get("change_type") for r in value or [] if isinstance(r, dict) and r.get("code") == "ISSUED"]
        out.append(_text(found[0]) if found else None)
    return out


def change_type(category: str | None, landuse_main: str | None, issued: Any = None) -> str:
    """变化类型 (BHLX), a land-change type rather than the rule category.

    The issued 图斑's own type for a warning created from one; ``批而未建(无变化)`` for 批而不建; for detected
    construction ``新增建设用地`` (before-class unknown), ``耕地→建设用地`` etc. when the land-use layer gave a
    class outside 建设用地, or ``建设用地内改扩建``.
    """
    from cspon_rs.rules.landuse import load_code_table

    if category == "issued":
        return _text(issued) or "下发图斑"
    if category == "approved_not_built":
        return "批而未建(无变化)"
    if not landuse_main:
        return "新增建设用地"
    table = load_code_table()
    code = table.normalise(landuse_main) or ""
    group = table.codes[code].group if code in table.codes else None
    if group == "建设用地":
        return "建设用地内改扩建"
    return f"{table.first_level(code)}→建设用地" if table.known(code) else "新增建设用地"


def _landuse_columns(out: gpd.GeoDataFrame, areas: list[Any], cropland: list[Any], main: list[Any],
                     index: pd.Index) -> None:
    """占用耕地 (m², 亩), main class (code, ``code name``) and areas by first-level class (text); empty
    without a land-use layer in the run (:mod:`cspon_rs.rules.landuse`)."""
    from cspon_rs.rules.landuse import class_name, landuse_text, load_code_table

    table = load_code_table()
    crop = pd.to_numeric(pd.Series(cropland, index=index, dtype=object), errors="coerce").astype(float)
    out["cropland_m2"] = crop.round(2)
    out["cropland_mu"] = (crop / SQM_PER_MU).round(4)
    out["landuse_main"] = [_text(v) for v in main]
    out["landuse_main_zh"] = [class_name(v, table) for v in out["landuse_main"]]
    out["landuse_zh"] = [landuse_text(v, table) or None for v in areas]


def _clip_bytes(text: str, width: int, encoding: str) -> str:
    if width <= 0:
        return text
    codec = _PY_ENCODING.get(encoding.upper(), encoding)
    if codec != "utf-8":  # GBK has no superscript two
        text = text.replace("m²", "平方米").encode(codec, errors="replace").decode(codec)
    data = text.encode(codec, errors="replace")
    if len(data) <= width:
        return text
    return data[:width].decode(codec, errors="ignore")


def _field_arrays(frame: gpd.GeoDataFrame, schema: ExportSchema, names: list[str], encoding: str | None
                  ) -> list[np.ndarray]:
    arrays: list[np.ndarray] = []
    for spec in schema.fields:
        values = list(frame[spec.source])
        if spec.type == "date":
            arrays.append(np.array([np.datetime64(v, "D") if v is not None else np.datetime64("NaT")
                                    for v in values], dtype="datetime64[D]"))
        elif spec.type == "float":
            numbers = pd.to_numeric(pd.Series(values), errors="coerce").astype(float).to_numpy()
            if spec.decimals:
                numbers = np.round(numbers, spec.decimals)
            arrays.append(numbers + 0.0)  # -0.0 + 0.0 is 0.0: no "-0.000"
        elif spec.type == "int":
            arrays.append(pd.to_numeric(pd.Series(values), errors="coerce").fillna(0).astype("int64").to_numpy())
        else:
            texts = [_text(v) for v in values]
            if encoding is not None:
                texts = [None if t is None else _clip_bytes(t, spec.width or 254, encoding) for t in texts]
            arrays.append(np.array(texts, dtype=object))
    return arrays


def write_tuban(
    warnings: gpd.GeoDataFrame,
    path: str | Path,
    *,
    fmt: Literal["gpkg", "shp"] | None = None,
    schema: ExportSchema | str | Path | None = None,
    out_crs: OutCRS = "auto-gk",
    encoding: str = "UTF-8",
    gpkg_version: Literal["1.2", "1.3"] = "1.2",
    only_warnings: bool = True,
) -> Path:
    """Write the 图斑 layer (one polygon per warning) with the schema's fields.

    Args:
        warnings: See :func:`tuban_frame`.
        path: ``.gpkg`` or ``.shp`` target (the Shapefile's ``.shx/.dbf/.prj/.cpg`` go beside it).
        fmt: ``gpkg`` or ``shp``; taken from the suffix when omitted.
        schema: Schema, YAML path, or None for ``configs/export_fields.yaml``.
        out_crs: ``auto-gk`` (CGCS2000 GK zone of the layer centre), ``scene`` (the input CRS) or a CRS such
            as ``EPSG:4490``.
        encoding: Shapefile DBF encoding written to the ``.cpg`` (``UTF-8``, ``GBK``); GeoPackage is UTF-8.
        gpkg_version: GeoPackage version (GDAL ``VERSION``); 1.2 or 1.3 open in every current GIS.
        only_warnings: Leave out legal rows (category ``none`` without flags).

    Returns:
        The written ``.gpkg`` or ``.shp`` path. Files get the default mode (0644 under umask 022).

    Raises:
        ConfigError: Unknown format/encoding; SchemaError: a schema source column that does not exist.
    """
    path = Path(path)
    kind = fmt or path.suffix.lower().lstrip(".")
    if kind not in ("gpkg", "shp"):
        raise ConfigError(f"{path}: unknown 图斑 layer format {kind!r}; use .gpkg or .shp")
    if kind == "shp" and encoding.upper() not in _PY_ENCODING:
        raise ConfigError(f"--encoding {encoding!r}: use UTF-8, GBK or GB18030")
    schema = schema if isinstance(schema, ExportSchema) else load_export_schema(schema)
    missing = [f.source for f in schema.fields if f.source not in SOURCE_COLUMNS]
    if missing:
        raise SchemaError(f"export schema: unknown source column(s) {missing}; use {list(SOURCE_COLUMNS)}")
    rows = warnings
    if only_warnings and "is_warning" in rows.columns:
        rows = rows[rows["is_warning"].astype(bool)]
    frame = tuban_frame(rows, schema)
    crs: CRS = resolve_out_crs(frame, out_crs) if len(frame) or out_crs != "auto-gk" else CGCS2000
    geoms = frame.geometry.to_crs(crs) if len(frame) else frame.geometry
    multi = np.array([shapely.to_wkb(shapely.multipolygons(shapely.get_parts(g)) if g.geom_type == "Polygon"
                                     else g) for g in geoms], dtype=object)
    names = [f.code if kind == "shp" or schema.gpkg_names == "code" else f.alias for f in schema.fields]
    planar_crs = frame["gk_epsg"].iloc[0] if len(frame) else "n/a"
    metadata = {
        "AREA_METHOD": AREA_METHOD,
        "PLANAR_AREA_CRS": str(planar_crs),
        "OUTPUT_CRS": crs.to_string(),
        "FIELDS": json.dumps({f.code: f.alias for f in schema.fields}, ensure_ascii=False),
        "SUSPECTED": "rows without 核查结果 are suspected (疑似) until a field check",
    }
    fields = _field_arrays(frame, schema, names, encoding if kind == "shp" else None)
    common: dict[str, Any] = {"geometry_type": "MultiPolygon", "crs": crs.to_wkt()}
    if kind == "gpkg":
        with atomic_path(path, keep_tmp=False) as tmp:
            ogr_write(str(tmp), multi, fields, names, driver="GPKG", layer=schema.layer_name,
                      dataset_options={"VERSION": gpkg_version}, layer_metadata=metadata, **common)
            declare_text_widths(tmp, schema.layer_name, {n: f.width for n, f in zip(names, schema.fields, strict=True)
                                                         if f.type == "str" and f.width})
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    try:
        tmp = workdir / f"{path.stem}.shp"
        ogr_write(str(tmp), multi, fields, names, driver="ESRI Shapefile", encoding=encoding.upper(), **common)
        # the attribute table again, with the schema's widths/decimals and the encoding's LDID (byte 29)
        write_dbf(tmp.with_suffix(".dbf"), [DbfField(f.code, f.type, f.width, f.decimals) for f in schema.fields],
                  [list(a) for a in fields], encoding)
        (workdir / f"{path.stem}.txt").write_text(
            "图斑图层说明 layer notes\n" + "\n".join(f"{k}: {v}" for k, v in metadata.items()) + "\n",
            encoding="utf-8")
        for suffix in (*SHP_SUFFIXES, ".txt"):
            part = workdir / f"{path.stem}{suffix}"
            if part.exists():
                publish(part, path.with_suffix(suffix))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return path


def zip_shapefile(shp: str | Path, target: str | Path) -> Path:
    """Pack a Shapefile's parts (and its ``.txt`` notes) into one zip, as bureaus exchange them."""
    shp = Path(shp)
    target = Path(target)
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for suffix in (*SHP_SUFFIXES, ".txt"):
            part = shp.with_suffix(suffix)
            if part.exists():
                archive.write(part, arcname=part.name)
    return target
