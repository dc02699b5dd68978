"""One call from change patches to stored, exported warnings (used by the CLI, the demo and the API)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import pandas as pd
from shapely.geometry import box

from cspon_rs.errors import SchemaError
from cspon_rs.geo.crs import SQM_PER_MU
from cspon_rs.rules.config import (
    CATEGORIES,
    FieldsConfig,
    RulesConfig,
    load_fields_config,
    load_rules_config,
)
from cspon_rs.rules.engine import classify
from cspon_rs.rules.inputs import (
    PERMIT_COLUMNS,
    drop_suppressed,
    load_control_lines,
    load_patches,
    load_permits,
    load_townships,
)

if TYPE_CHECKING:
    from cspon_rs.store.crud import RunProvenance

__all__ = ["NO_PERMITS_NOTE", "WarningRunResult", "no_permits", "run_provenance", "run_warning_pipeline",
           "scene_footprint"]

#: Summary line of a run without a permit layer.
NO_PERMITS_NOTE = ("no permit layer given: every change patch is treated as 未批先建 (built before approval) "
                   "and 批而不建 cannot be judged; pass --permits once the county's approvals are digitised")


@dataclass
class WarningRunResult:
    """What :func:`run_warning_pipeline` produced.

    Attributes:
        period, county_code: The run's keys.
        t1, t2: Dates of the before/after scenes.
        counts: Rows per category (``none`` = legal, kept for statistics).
        n_warnings: Rows that are warnings (not legal, or carrying a control-line flag).
        total_area_m2, total_area_mu: Area of the warnings.
        xlsx, csv, gpkg: Written list files (``gpkg``: every working column, for analysts).
        shp, tuban_gpkg: The 图斑 layer in bureau form (schema ``configs/export_fields.yaml``), Shapefile
            (with ``.cpg``) and GeoPackage 1.2; ``None`` when not written.
        store_layer: GeoPackage beside the store with every stored warning (a QGIS layer of the store).
        chips: Warning id → PNG (empty without before/after scenes).
        db_url: Store the warnings were saved to.
        created, unchanged, merged: Store outcome (new ids, ids already there, merged into earlier periods).
        messages: Input repairs and notes (one line each).
        warnings: The classified warnings with ``warning_id`` (patch CRS).
        provenance: Scenes (absolute path + sha256) and model stored with the patches and warnings.
        model_version_id: Registry id of that model for this county (``None``: not registered).
    """

    period: str
    county_code: str
    t1: dt.date
    t2: dt.date
    counts: dict[str, int]
    n_warnings: int
    total_area_m2: float
    total_area_mu: float
    xlsx: Path
    csv: Path
    gpkg: Path
    db_url: str
    chips: dict[str, Path] = field(default_factory=dict)
    shp: Path | None = None
    tuban_gpkg: Path | None = None
    store_layer: Path | None = None
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    merged: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    warnings: gpd.GeoDataFrame | None = None
    provenance: dict[str, str | None] = field(default_factory=dict)
    model_version_id: int | None = None


def run_provenance(
    patches: gpd.GeoDataFrame, before: str | Path | None, after: str | Path | None
) -> tuple[RunProvenance, list[str]]:
    """Scene identity (absolute path + sha256) and model of a run, and notes on anything incomplete.

    A scene given as ``before``/``after`` wins over what the patches name; its sha256 is taken from the
    patches when they name the same file with a checksum (the detector already read it in this run), else
    computed once here. Without ``before``/``after`` the patches' own paths and checksums are used.
    """
    from cspon_rs.geo.files import file_sha256
    from cspon_rs.store.crud import RunProvenance, provenance_from_patches

    stored = provenance_from_patches(patches)
    notes: list[str] = []
    fields: dict[str, str | None] = {"detector": stored.detector, "model_sha256": stored.model_sha256}
    for side, given in (("before", before), ("after", after)):
        path_key, sha_key = f"scene_{side}", f"scene_{side}_sha256"
        named: str | None = getattr(stored, path_key)
        named_sha: str | None = getattr(stored, sha_key)
        if given is not None:
            path = str(Path(given).resolve())
            if named is not None and Path(named).name != Path(path).name:
                notes.append(f"the change patches name {side} scene {named}, but --{side} is {path}; "
                             f"the store records {path}")
            sha = named_sha if named == path and named_sha else file_sha256(path)
            fields[path_key], fields[sha_key] = path, sha
        elif named is not None and Path(named).is_absolute():
            fields[path_key] = named
            fields[sha_key] = named_sha or (file_sha256(named) if Path(named).is_file() else None)
        else:
            fields[path_key], fields[sha_key] = named, None
            if len(patches):
                notes.append(f"{side} scene identity incomplete (patches name {named!r} without a path or checksum): "
                             f"pass --before and --after so verified warnings can become training labels")
    return RunProvenance(**fields), notes


def scene_footprint(before: str | Path, after: str | Path) -> gpd.GeoSeries:
    """The area seen on both dates: intersection of the two rasters' bounds, in the before scene's CRS."""
    from cspon_rs.geo.raster import grid_info

    a, b = grid_info(before), grid_info(after)
    fa = gpd.GeoSeries([box(*a.bounds)], crs=a.crs)
    fb = gpd.GeoSeries([box(*b.bounds)], crs=b.crs).to_crs(a.crs)
    return gpd.GeoSeries([fa.iloc[0].intersection(fb.iloc[0])], crs=a.crs)


def no_permits(crs: object) -> gpd.GeoDataFrame:
    """An empty permit layer with the canonical columns (a county without digital permits)."""
    frame = gpd.GeoDataFrame({c: pd.Series(dtype=object) for c in PERMIT_COLUMNS}, geometry=[], crs=crs)
    frame.attrs["messages"] = [NO_PERMITS_NOTE]
    return frame


def _dates(patches: gpd.GeoDataFrame, t1: dt.date | None, t2: dt.date | None, source: Path) -> tuple[dt.date, dt.date]:
    if t1 is None:
        values = sorted({v for v in patches["t1"] if v is not None}) if len(patches) else []
        if not values:
            raise SchemaError(f"{source}: no t1 date in the change patches; pass t1 explicitly")
        t1 = values[0]
    if t2 is None:
        values = sorted({v for v in patches["t2"] if v is not None}) if len(patches) else []
        if not values:
            raise SchemaError(f"{source}: no t2 date in the change patches; pass t2 explicitly")
        t2 = values[-1]
    return t1, t2


def run_warning_pipeline(
    changes_path: str | Path,
    permits_path: str | Path | None,
    control_lines_path: str | Path | None,
    *,
    period: str,
    county_code: str,
    out_dir: str | Path,
    db_url: str | None = None,
    townships_path: str | Path | None = None,
    before: str | Path | None = None,
    after: str | Path | None = None,
    rules: RulesConfig | str | Path | None = None,
    fields: FieldsConfig | str | Path | None = None,
    t1: dt.date | None = None,
    t2: dt.date | None = None,
    progress: bool = True,
    out_crs: str = "auto-gk",
    encoding: str = "UTF-8",
    export_schema: str | Path | None = None,
    landuse_path: str | Path | None = None,
) -> WarningRunResult:
    """Classify a run's change patches, store them, and write the lists (and chips).

    Args:
        changes_path: GeoPackage with the ``change_patches`` layer.
        permits_path: Permit layer (GeoPackage/Shapefile/GeoJSON), fields mapped by ``fields``; ``None``: no
            digital permits yet -- every patch becomes 未批先建 and the messages say so (:data:`NO_PERMITS_NOTE`).
        control_lines_path: Control-line GeoPackage (YJJBNT/STBHHX/CZKFBJ) or None.
        period: Period code, e.g. ``2026Q3``.
        county_code: County code, e.g. ``510000``.
        out_dir: Output folder: ``warnings_<county>_<period>.xlsx/.csv/.gpkg``, ``chips/``.
        db_url: Store URL; default ``sqlite:///<out_dir>/warnings.sqlite``.
        townships_path: Optional township layer.
        before, after: Optional scenes; give both for image chips and the 批而不建 footprint.
        rules: Thresholds (config, YAML path, or None for ``configs/rules_default.yaml``).
        fields: Field mapping (config, YAML path, or None for ``configs/fields_default.yaml``).
        t1, t2: Override the dates read from the patches.
        progress: Show progress bars.
        out_crs: CRS of the 图斑 layer (``auto-gk``, ``scene`` or e.g. ``EPSG:4490``).
        encoding: Shapefile encoding (``UTF-8`` or ``GBK``), written to the ``.cpg``.
        export_schema: 图斑 field schema YAML (default ``configs/export_fields.yaml``).
        landuse_path: Optional land-use layer (三调/年度变更 DLTB, ``landuse`` in the field mapping): each
            warning gets its area by before-class, 占用耕地 and main class (:mod:`cspon_rs.rules.landuse`).
    """
    from cspon_rs.exports.chips import write_chips
    from cspon_rs.exports.fieldresults import attach_field_results
    from cspon_rs.exports.layers import write_tuban
    from cspon_rs.exports.lists import write_warning_csv, write_warning_gpkg, write_warning_xlsx
    from cspon_rs.exports.schema import load_export_schema
    from cspon_rs.store.crud import save_warnings
    from cspon_rs.store.db import open_store, sqlite_url

    rules_cfg = rules if isinstance(rules, RulesConfig) else load_rules_config(rules)
    fields_cfg = fields if isinstance(fields, FieldsConfig) else load_fields_config(fields)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    changes_path = Path(changes_path)
    patches = load_patches(changes_path, include_suppressed=True)  # dates below come from every patch
    schema = load_export_schema(export_schema)
    permits = (load_permits(permits_path, mapping=fields_cfg.permits) if permits_path is not None
               else no_permits(patches.crs))
    control = load_control_lines(control_lines_path, mapping=fields_cfg.control_lines) if control_lines_path else None
    townships = load_townships(townships_path, mapping=fields_cfg.townships) if townships_path else None
    messages_before = list(patches.attrs.get("messages", []))
    messages = [*messages_before, *permits.attrs.get("messages", [])]
    if control is not None:
        messages += control.attrs.get("messages", [])
    if townships is not None:
        messages += townships.attrs.get("messages", [])
    d1, d2 = _dates(patches, t1, t2, changes_path)
    provenance, notes = run_provenance(patches, before, after)
    messages += notes
    patches = drop_suppressed(patches)  # patches flagged by the detector's suppression never become warnings
    messages += patches.attrs.get("messages", [])[len(messages_before):]
    footprint = scene_footprint(before, after) if before is not None and after is not None else None
    warnings = classify(patches, permits, control, t1=d1, t2=d2, config=rules_cfg, townships=townships,
                        footprint=footprint)
    if landuse_path is not None and len(warnings):
        from cspon_rs.rules.landuse import attach_landuse, load_landuse

        landuse = load_landuse(landuse_path, mapping=fields_cfg.landuse,
                               bounds=tuple(float(v) for v in warnings.total_bounds),  # type: ignore[arg-type]
                               bounds_crs=warnings.crs)
        warnings = attach_landuse(warnings, landuse)
        messages += landuse.messages
    url = db_url or sqlite_url(out / "warnings.sqlite")
    sessions = open_store(url)
    try:
        with sessions() as session:
            saved = save_warnings(session, warnings, period=period, county_code=county_code, patches=patches,
                                  link_merge_share=rules_cfg.link_merge_share, provenance=provenance)
        warnings = warnings.copy()
        warnings["warning_id"] = [saved.ids.get(str(k)) for k in warnings["source_key"]]
        warnings["period"] = period
        warnings["county_code"] = county_code
        if landuse_path is not None and saved.unchanged:  # a re-run that brings the land-use layer later
            from cspon_rs.rules.landuse import store_landuse

            with sessions() as session:
                store_landuse(session, warnings, only=set(saved.unchanged))
        with sessions() as session:  # field results already recorded for re-run warnings
            warnings = attach_field_results(warnings, session)
        store_layer = _write_store_layer(sessions, url, schema)
    finally:
        sessions.kw["bind"].dispose()
    stem = f"warnings_{county_code}_{period}"
    title = f"{county_code} {period} 疑似违法用地预警清单 suspected-violation list ({d1} → {d2})"
    chips: dict[str, Path] = {}
    if before is not None and after is not None:
        flagged = warnings[warnings["is_warning"].astype(bool)]
        chips = write_chips(flagged, before, after, out / "chips", permits=permits, progress=progress)
    xlsx = write_warning_xlsx(warnings, out / f"{stem}.xlsx", title=title, chips=chips, schema=schema)
    csv = write_warning_csv(warnings, out / f"{stem}.csv", chips=chips, schema=schema)
    gpkg = write_warning_gpkg(warnings, out / f"{stem}.gpkg")
    tuban_stem = f"tuban_{county_code}_{period}"
    tuban_gpkg = write_tuban(warnings, out / "tuban" / f"{tuban_stem}.gpkg", schema=schema, out_crs=out_crs)
    shp = write_tuban(warnings, out / "tuban" / f"{tuban_stem}.shp", schema=schema, out_crs=out_crs,
                      encoding=encoding)
    counts = {c: int((warnings["category"] == c).sum()) for c in CATEGORIES}
    flagged = warnings[warnings["is_warning"].astype(bool)]
    area = float(pd.to_numeric(flagged["area_m2"]).sum()) if len(flagged) else 0.0
    return WarningRunResult(
        period=period, county_code=county_code, t1=d1, t2=d2, counts=counts, n_warnings=len(flagged),
        total_area_m2=round(area, 2), total_area_mu=round(area / SQM_PER_MU, 4),
        xlsx=xlsx, csv=csv, gpkg=gpkg, db_url=url, chips=chips, shp=shp, tuban_gpkg=tuban_gpkg,
        store_layer=store_layer, created=saved.created,
        unchanged=saved.unchanged, merged=saved.merged, messages=messages, warnings=warnings,
        provenance=dict(provenance.__dict__), model_version_id=saved.model_version_id,
    )


def _write_store_layer(sessions: object, url: str, schema: object) -> Path | None:
    """Write ``<store>.gpkg`` (every stored warning, bureau fields) beside a SQLite store; None otherwise."""
    from cspon_rs.exports.fieldresults import attach_field_results
    from cspon_rs.exports.layers import write_tuban
    from cspon_rs.store.crud import list_warnings, warnings_frame

    if not url.startswith("sqlite:///"):
        return None
    db_path = Path(url.removeprefix("sqlite:///"))
    with sessions() as session:  # type: ignore[operator]
        records = list_warnings(session, only_warnings=True, limit=None)
        frame = attach_field_results(warnings_frame(records), session) if records else None
    if frame is None:
        return None
    return write_tuban(frame, db_path.with_name(f"{db_path.stem}_layer.gpkg"), schema=schema,  # type: ignore[arg-type]
                       out_crs="EPSG:4490")
