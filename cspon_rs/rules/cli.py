"""CLI commands of the warning engine and its deliverables: ``cspon-rs warn``, ``export``, ``report``, ``patrol``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _parse_lonlat(text: str) -> tuple[float, float]:
    from cspon_rs.errors import ConfigError

    try:
        lon, lat = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise ConfigError(f"--start {text!r}: expected LON,LAT, e.g. 114.25,22.30") from exc
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ConfigError(f"--start {text!r}: longitude/latitude out of range")
    return lon, lat


def map_control_lines(path: Path | None) -> object:
    """Control lines for maps (``kind`` column), or None."""
    if path is None:
        return None
    from cspon_rs.rules.config import load_fields_config
    from cspon_rs.rules.inputs import load_control_lines

    return load_control_lines(path, mapping=load_fields_config().control_lines)


def register(app: typer.Typer) -> None:
    """Add ``warn``, ``export``, ``report`` and ``patrol`` to ``app``."""

    @app.command()
    def warn(
        changes: Annotated[Path, typer.Option(help="GeoPackage with the change_patches layer")],
        period: Annotated[str, typer.Option(help="Period code, e.g. 2026Q3")],
        county: Annotated[str, typer.Option(help="County code, e.g. 510000")],
        out: Annotated[Path, typer.Option(help="Output folder")],
        control_lines: Annotated[Path | None, typer.Option(help="Control lines GeoPackage (YJJBNT/STBHHX/CZKFBJ)")]
        = None,
        townships: Annotated[Path | None, typer.Option(help="Township polygons (XZQDM, XZQMC)")] = None,
        before: Annotated[Path | None, typer.Option(help="Before scene (for image chips)")] = None,
        after: Annotated[Path | None, typer.Option(help="After scene (for image chips)")] = None,
        db: Annotated[str | None, typer.Option(help="Store URL (default sqlite:///OUT/warnings.sqlite)")] = None,
        rules: Annotated[Path | None, typer.Option(help="Rule thresholds YAML")] = None,
        fields: Annotated[Path | None, typer.Option(help="Field mapping YAML")] = None,
        permits: Annotated[Path | None, typer.Option(
            help="Permit polygons (GeoPackage/Shapefile/GeoJSON); omit when the county has no digital permits "
                 "yet: every patch is then 未批先建")] = None,
        out_crs: Annotated[str, typer.Option(help="CRS of the 图斑 layer: auto-gk | scene | EPSG:4490 | EPSG:45xx")]
        = "auto-gk",
        encoding: Annotated[str, typer.Option(help="Shapefile encoding written to the .cpg: UTF-8 | GBK")] = "UTF-8",
        export_schema: Annotated[Path | None, typer.Option(help="图斑 field schema YAML (configs/export_fields.yaml)")]
        = None,
        report: Annotated[bool, typer.Option(help="Also write the PDF report (report_<county>_<period>.pdf)")]
        = False,
        landuse: Annotated[Path | None, typer.Option(
            help="Land-use layer (三调/年度变更 DLTB: GeoPackage, Shapefile or FileGDB with DLBM codes; layer and "
                 "class field from --fields): area by before-class, 占用耕地 and main class per warning")] = None,
    ) -> None:
        """Classify change patches into warnings, store them and write the lists (XLSX/CSV), the 图斑 layer
        (Shapefile + GeoPackage), chips and optionally the PDF report."""
        from rich.console import Console
        from rich.table import Table

        from cspon_rs.exports.lists import summary_tables
        from cspon_rs.rules.pipeline import run_warning_pipeline

        console = Console()
        result = run_warning_pipeline(
            changes, permits, control_lines, period=period, county_code=county, out_dir=out, db_url=db,
            townships_path=townships, before=before, after=after, rules=rules, fields=fields, out_crs=out_crs,
            encoding=encoding, export_schema=export_schema, landuse_path=landuse,
        )
        from cspon_rs.rules.pipeline import NO_PERMITS_NOTE

        for message in result.messages:
            if message != NO_PERMITS_NOTE:
                console.print(f"[yellow]note:[/] {message}")
        assert result.warnings is not None
        tables = summary_tables(result.warnings)
        for name, frame in tables.items():
            table = Table(title=f"{county} {period} ({result.t1} → {result.t2}) by {name}")
            for column in frame.columns:
                table.add_column(str(column), justify="right" if column in ("count", "area_m2", "area_mu") else "left")
            for row in frame.itertuples(index=False):
                table.add_row(*(f"{v:,.1f}" if isinstance(v, float) else str(v) for v in row))
            console.print(table)
        console.print(
            f"{result.n_warnings} warnings, {result.total_area_m2:,.0f} m² ({result.total_area_mu:,.2f} mu); "
            f"store {result.db_url}: {len(result.created)} new, {len(result.unchanged)} unchanged, "
            f"{len(result.merged)} merged into earlier periods"
        )
        if permits is None:
            console.print(f"[bold yellow]{NO_PERMITS_NOTE}[/]")
        for path in (result.xlsx, result.csv, result.gpkg, result.tuban_gpkg, result.shp, result.store_layer):
            if path is not None:
                console.print(f"wrote {path}", soft_wrap=True)
        if result.chips:
            console.print(f"wrote {len(result.chips)} chips to {out / 'chips'}")
        if report:
            from cspon_rs.exports.report import write_report

            pdf = write_report(result.warnings, out / f"report_{county}_{period}.pdf", county_code=county,
                               period=period, chips=result.chips or None, after=after,
                               control_lines=map_control_lines(control_lines))
            console.print(f"wrote {pdf}", soft_wrap=True)

    @app.command("export")
    def export_cmd(
        db: Annotated[str, typer.Option(help="Store URL, e.g. sqlite:///out/warnings.sqlite")],
        period: Annotated[str, typer.Option(help="Period code, e.g. 2026Q3")],
        out: Annotated[Path, typer.Option(help="Output folder")],
        county: Annotated[str | None, typer.Option(help="County code (default: all counties)")] = None,
        fmt: Annotated[str, typer.Option("--format", help="Comma-separated: xlsx,csv,shp,tuban-gpkg,gpkg,pdf")]
        = "xlsx,csv,shp,tuban-gpkg",
        out_crs: Annotated[str, typer.Option(help="CRS of the 图斑 layer: auto-gk | scene | EPSG:4490 | EPSG:45xx")]
        = "auto-gk",
        encoding: Annotated[str, typer.Option(help="Shapefile encoding written to the .cpg: UTF-8 | GBK")] = "UTF-8",
        gpkg_version: Annotated[str, typer.Option(help="GeoPackage version of the 图斑 layer: 1.2 | 1.3")] = "1.2",
        export_schema: Annotated[Path | None, typer.Option(help="图斑 field schema YAML")] = None,
        chips: Annotated[Path | None, typer.Option(help="Folder of <warning_id>.png chips to link")] = None,
    ) -> None:
        """Write a period's deliverables from the store's current state (field results included)."""
        from cspon_rs.errors import ConfigError
        from cspon_rs.exports.bundle import export_period
        from cspon_rs.store.db import open_store

        if gpkg_version not in ("1.2", "1.3"):
            raise ConfigError(f"--gpkg-version {gpkg_version!r}: use 1.2 or 1.3")
        sessions = open_store(db)
        try:
            with sessions() as session:
                result = export_period(session, out, period=period, county_code=county,
                                       formats=[f.strip() for f in fmt.split(",") if f.strip()], out_crs=out_crs,
                                       encoding=encoding, gpkg_version=gpkg_version,  # type: ignore[arg-type]
                                       schema=export_schema, chips_dir=chips)
        finally:
            sessions.kw["bind"].dispose()
        typer.echo(f"{result.n_warnings} warnings")
        for path in result.files.values():
            typer.echo(f"wrote {path}")

    @app.command("report")
    def report_cmd(
        db: Annotated[str, typer.Option(help="Store URL, e.g. sqlite:///out/warnings.sqlite")],
        period: Annotated[str, typer.Option(help="Period code, e.g. 2026Q3")],
        county: Annotated[str, typer.Option(help="County code")],
        out: Annotated[Path, typer.Option(help="Output PDF")],
        before: Annotated[Path | None, typer.Option(help="Before scene (chips)")] = None,
        after: Annotated[Path | None, typer.Option(help="After scene (chips, overview map)")] = None,
        chips: Annotated[Path | None, typer.Option(help="Folder of ready <warning_id>.png chips")] = None,
        control_lines: Annotated[Path | None, typer.Option(help="Control lines GeoPackage (overview map)")] = None,
        ids: Annotated[str | None, typer.Option(help="Comma-separated warning ids that get a 核查表 page "
                                                     "(default: every warning)")] = None,
        top: Annotated[int, typer.Option(help="Warnings shown with chips in 重点预警", min=0)] = 6,
    ) -> None:
        """Write the PDF report of a period and county: overview, statistics, top warnings, one 核查表 per warning."""
        from cspon_rs.errors import ConfigError
        from cspon_rs.exports.bundle import store_frame
        from cspon_rs.exports.report import write_report
        from cspon_rs.store.db import open_store

        if out.suffix.lower() != ".pdf":
            raise ConfigError(f"--out {out}: give a .pdf file name")
        sessions = open_store(db)
        try:
            with sessions() as session:
                frame = store_frame(session, period=period, county_code=county)
        finally:
            sessions.kw["bind"].dispose()
        chip_map = {p.stem: p for p in chips.glob("*.png")} if chips is not None and chips.is_dir() else None
        selected = [i.strip() for i in ids.split(",") if i.strip()] if ids else None
        out.parent.mkdir(parents=True, exist_ok=True)
        path = write_report(frame, out, county_code=county, period=period, chips=chip_map, before=before,
                            after=after, control_lines=map_control_lines(control_lines), sheet_ids=selected, top_n=top)
        typer.echo(f"wrote {path}")

    @app.command()
    def patrol(
        db: Annotated[str, typer.Option(help="Store URL, e.g. sqlite:///out/warnings.sqlite")],
        start: Annotated[str, typer.Option(help="Start point LON,LAT (EPSG:4326)")],
        out: Annotated[Path, typer.Option(help="Output file")],
        period: Annotated[str | None, typer.Option(help="Period code")] = None,
        county: Annotated[str | None, typer.Option(help="County code")] = None,
        ids: Annotated[str | None, typer.Option(help="Comma-separated warning ids (default: all open warnings)")]
        = None,
        fmt: Annotated[str, typer.Option("--format", help="kml | kmz | gpx | geojson")] = "kml",
        limit: Annotated[int, typer.Option(help="At most this many (highest priority first), 1 or more")] = 50,
        chips: Annotated[Path | None, typer.Option(help="Folder of <id>.png chips to embed in a KMZ "
                                                   "(the warn step's chips/)")] = None,
        roads: Annotated[Path | None, typer.Option(help="County road layer (GPKG lines): order and measure the "
                                                   "route over the roads (default: straight lines)")] = None,
    ) -> None:
        """Write a patrol route (KML/KMZ/GPX/GeoJSON) of stored warnings, ordered from a start point."""
        from cspon_rs.errors import ConfigError, MissingFileError, NotFoundError, SchemaError

        if limit < 1:
            raise ConfigError(f"--limit {limit}: give 1 or more warnings per patrol")
        if not out.parent.is_dir():
            raise MissingFileError(f"--out {out}: folder {out.parent} does not exist; create it first")
        from cspon_rs.exports.patrol import write_patrol
        from cspon_rs.store.crud import get_warning, list_warnings, warnings_frame
        from cspon_rs.store.db import open_store

        lonlat = _parse_lonlat(start)
        sessions = open_store(db)
        with sessions() as session:
            if ids:
                records = [get_warning(session, i.strip()) for i in ids.split(",") if i.strip()]
            else:
                records = list_warnings(session, period=period, county_code=county, status=["new", "assigned"],
                                        only_warnings=True, limit=limit)
        if not records:
            raise NotFoundError(f"{db}: no open warnings for period={period} county={county}")
        if fmt not in ("kml", "kmz", "gpx", "geojson"):
            raise SchemaError(f"--format {fmt!r}: use kml, kmz, gpx or geojson")
        if chips is not None and not chips.is_dir():
            raise MissingFileError(f"--chips {chips}: folder does not exist (the warn step writes <out>/chips)")
        if roads is not None and not roads.is_file():
            raise MissingFileError(f"--roads {roads}: file does not exist; give a GeoPackage of road lines")
        chip_files = {r.id: chips / f"{r.id}.png" for r in records} if chips is not None else {}
        result = write_patrol(warnings_frame(records), out, start_lonlat=lonlat, fmt=fmt,  # type: ignore[arg-type]
                              chips={k: v for k, v in chip_files.items() if v.is_file()}, roads=roads)
        how = "沿道路 along roads" if result.along_roads else "直线 straight lines"
        typer.echo(f"wrote {result.path}: {len(result.order)} stops, route {result.length_m / 1000:.1f} km ({how})")
