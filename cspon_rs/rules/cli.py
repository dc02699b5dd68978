"""CLI commands of the warning engine: ``cspon-rs warn`` and ``cspon-rs patrol``."""

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


def register(app: typer.Typer) -> None:
    """Add ``warn`` and ``patrol`` to ``app``."""

    @app.command()
    def warn(
        changes: Annotated[Path, typer.Option(help="GeoPackage with the change_patches layer")],
        permits: Annotated[Path, typer.Option(help="Permit polygons (GeoPackage/Shapefile/GeoJSON)")],
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
    ) -> None:
        """Classify change patches into warnings, store them and write XLSX/CSV/GPKG lists (and chips)."""
        from rich.console import Console
        from rich.table import Table

        from cspon_rs.exports.lists import summary_tables
        from cspon_rs.rules.pipeline import run_warning_pipeline

        console = Console()
        result = run_warning_pipeline(
            changes, permits, control_lines, period=period, county_code=county, out_dir=out, db_url=db,
            townships_path=townships, before=before, after=after, rules=rules, fields=fields,
        )
        for message in result.messages:
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
        console.print(f"wrote {result.xlsx}\nwrote {result.csv}\nwrote {result.gpkg}")
        if result.chips:
            console.print(f"wrote {len(result.chips)} chips to {out / 'chips'}")

    @app.command()
    def patrol(
        db: Annotated[str, typer.Option(help="Store URL, e.g. sqlite:///out/warnings.sqlite")],
        start: Annotated[str, typer.Option(help="Start point LON,LAT (EPSG:4326)")],
        out: Annotated[Path, typer.Option(help="Output file")],
        period: Annotated[str | None, typer.Option(help="Period code")] = None,
        county: Annotated[str | None, typer.Option(help="County code")] = None,
        ids: Annotated[str | None, typer.Option(help="Comma-separated warning ids (default: all open warnings)")]
        = None,
        fmt: Annotated[str, typer.Option("--format", help="kml | gpx | geojson")] = "kml",
        limit: Annotated[int, typer.Option(help="At most this many (highest priority first), 1 or more")] = 50,
    ) -> None:
        """Write a patrol route (KML/GPX/GeoJSON) of stored warnings, ordered from a start point."""
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
        if fmt not in ("kml", "gpx", "geojson"):
            raise SchemaError(f"--format {fmt!r}: use kml, gpx or geojson")
        result = write_patrol(warnings_frame(records), out, start_lonlat=lonlat, fmt=fmt)  # type: ignore[arg-type]
        typer.echo(f"wrote {result.path}: {len(result.order)} stops, route {result.length_m / 1000:.1f} km")
