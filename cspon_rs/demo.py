"""``cspon-rs demo``: the whole pipeline on the bundled sample, start to finish.

detect (shipped checkpoint, or the spectral-index baseline when no checkpoint is there)
-> classify against permits and control lines -> store -> bureau deliverables (XLSX/CSV list, 图斑 Shapefile
and GeoPackage, chips, PDF report) + quicklook PNG.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from cspon_rs.errors import MissingFileError

__all__ = ["DemoInputs", "category_summary", "find_sample", "flag_counts", "register", "run_demo"]

#: Demo county (GB/T 2260 code of the Hong Kong SAR) and quarter of the date-2 image.
DEMO_COUNTY = "810000"
DEMO_PERIOD = "2018Q1"


@dataclass(frozen=True)
class DemoInputs:
    """Paths of the bundled sample (``data_samples/hongkong``)."""

    folder: Path
    before: Path
    after: Path
    permits: Path
    control_lines: Path
    townships: Path
    t1: str = "2016-09-27"
    t2: str = "2018-03-23"
    extra: dict[str, Any] = field(default_factory=dict)


def find_sample(folder: str | Path | None = None) -> DemoInputs:
    """Locate the bundled sample.

    Args:
        folder: The sample folder; by default ``data_samples/hongkong`` in the current directory, then in the
            source checkout this package was installed from.

    Raises:
        MissingFileError: The folder or one of its files is missing (the message names it and the fix).
    """
    candidates = (
        [Path(folder)]
        if folder is not None
        else [
            Path.cwd() / "data_samples" / "hongkong",
            Path(__file__).resolve().parents[1] / "data_samples" / "hongkong",
        ]
    )
    base = next((c for c in candidates if c.is_dir()), None)
    if base is None:
        raise MissingFileError(
            f"{candidates[0]}: sample folder not found; run from the cspon-rs checkout or pass --data "
            "(regenerate it with `python data_samples/make_samples.py`)"
        )
    inputs = DemoInputs(
        folder=base,
        before=base / "before_20160927.tif",
        after=base / "after_20180323.tif",
        permits=base / "permits.gpkg",
        control_lines=base / "control_lines.gpkg",
        townships=base / "townships.gpkg",
    )
    for path in (inputs.before, inputs.after, inputs.permits, inputs.control_lines, inputs.townships):
        if not path.is_file():
            raise MissingFileError(
                f"{path}: sample file missing; restore it with `git checkout -- data_samples` or regenerate it "
                "with `python data_samples/make_samples.py`"
            )
    return inputs


def category_summary(warnings: Any) -> list[dict[str, Any]]:
    """Count, area (m²) and control-line-flagged count per category of a classified warnings frame."""
    if warnings is None or len(warnings) == 0:
        return []
    rows = []
    for category, group in warnings.groupby("category", sort=True):
        flagged = sum(1 for flags in group["flags"] if flags)
        rows.append({"category": f"{category} {group['category_zh'].iloc[0]}", "count": len(group),
                     "area_m2": float(group["area_m2"].sum()), "flagged": flagged})
    return rows


def flag_counts(warnings: Any) -> dict[str, int]:
    """How many warnings carry each control-line flag (YJJBNT, STBHHX, CZKFBJ), in that order."""
    counts = dict.fromkeys(("YJJBNT", "STBHHX", "CZKFBJ"), 0)
    if warnings is None or len(warnings) == 0:
        return counts
    for flags in warnings["flags"]:
        if isinstance(flags, str):
            flags = json.loads(flags) if flags.startswith("[") else [f for f in flags.split(",") if f]
        for flag in flags or ():
            counts[str(flag)] = counts.get(str(flag), 0) + 1
    return counts


def run_demo(
    out_dir: str | Path,
    *,
    data: str | Path | None = None,
    detector: str = "auto",
    workers: int = 1,
) -> dict[str, Any]:
    """Run detection, warnings and exports on the sample; return a summary dict (also printed by the CLI).

    Args:
        out_dir: Output folder (created).
        data: Sample folder (see :func:`find_sample`).
        detector: ``"auto"`` (shipped checkpoint when present, else spectral), ``"spectral"``, or a checkpoint path.
        workers: Dask worker processes for detection.
    """
    from datetime import date

    import geopandas as gpd

    inputs = find_sample(data)  # fail fast, before the heavy imports

    from cspon_rs.inference.detect import detect_pair
    from cspon_rs.inference.suppress import SuppressConfig
    from cspon_rs.models.checkpoint import default_checkpoint
    from cspon_rs.quicklook import render_quicklook
    from cspon_rs.rules.pipeline import run_warning_pipeline

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint: str | Path
    if detector == "auto":
        shipped = default_checkpoint()
        checkpoint = shipped if shipped.is_file() else "spectral"
    else:
        checkpoint = detector
    started = time.perf_counter()
    detection = detect_pair(
        inputs.before,
        inputs.after,
        out / "detection",
        checkpoint=checkpoint,
        workers=workers,
        t1=date.fromisoformat(inputs.t1),
        t2=date.fromisoformat(inputs.t2),
        progress=True,
        suppress=SuppressConfig(),  # the same false-alarm cues as `cspon-rs detect` (configs/detect.yaml)
    )
    detected_at = time.perf_counter()
    db_path = out / "warnings.sqlite"
    result = run_warning_pipeline(
        detection.patches_path,
        inputs.permits,
        inputs.control_lines,
        period=DEMO_PERIOD,
        county_code=DEMO_COUNTY,
        out_dir=out / "warnings",
        db_url=f"sqlite:///{db_path.resolve()}",
        townships_path=inputs.townships,
        before=inputs.before,
        after=inputs.after,
    )
    warned_at = time.perf_counter()
    warnings_gdf = result.warnings if result.warnings is not None else gpd.GeoDataFrame()
    from cspon_rs.rules.cli import map_control_lines

    control = map_control_lines(inputs.control_lines)
    quicklook = render_quicklook(
        inputs.before,
        inputs.after,
        detection.mask_path,
        out / "quicklook.png",
        warnings=warnings_gdf,
        title=f"cspon-rs demo: OSCD Hong Kong {inputs.t1} -> {inputs.t2}, detector {detection.detector}",
        control_lines=control,  # type: ignore[arg-type]
        dates=(inputs.t1, inputs.t2),
    )
    report: Path | None = None
    from cspon_rs.exports.fonts import find_cjk_font

    if find_cjk_font() is not None and len(warnings_gdf):
        from cspon_rs.exports.report import write_report

        report = write_report(warnings_gdf, out / "warnings" / f"report_{DEMO_COUNTY}_{DEMO_PERIOD}.pdf",
                              county_code=DEMO_COUNTY, period=DEMO_PERIOD, chips=result.chips or None,
                              after=inputs.after, control_lines=control)  # type: ignore[arg-type]
    return {
        "detector": detection.detector,
        "detection": detection,
        "warnings": result,
        "quicklook": quicklook,
        "report": report,
        "database": db_path,
        "seconds": {"detect": detected_at - started, "warn": warned_at - detected_at},
    }


def register(app: typer.Typer) -> None:
    """Add ``cspon-rs demo``."""

    @app.command()
    def demo(
        out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/demo"),
        data: Annotated[Path | None, typer.Option(help="Sample folder (default: data_samples/hongkong).")] = None,
        detector: Annotated[
            str, typer.Option(help="'auto' (shipped checkpoint, else spectral), 'spectral', or a checkpoint path.")
        ] = "auto",
        workers: Annotated[int, typer.Option(min=1, help="Dask worker processes.")] = 1,
    ) -> None:
        """Run the whole pipeline on the bundled OSCD Hong Kong sample and print a summary."""
        from rich.console import Console
        from rich.table import Table

        from cspon_rs.geo.crs import to_mu

        console = Console()
        summary = run_demo(out, data=data, detector=detector, workers=workers)
        detection, result = summary["detection"], summary["warnings"]
        console.print(f"[bold]detector[/bold]: {summary['detector']}")
        if summary["detector"].startswith("spectral"):
            console.print("  (non-learned spectral change index with an Otsu threshold: no checkpoint was found)")
        table = Table(title="warnings by category (suspected cases, 疑似, until a field check)")
        table.add_column("category", no_wrap=True)
        table.add_column("warnings", justify="right")
        table.add_column("area m²", justify="right")
        table.add_column("area mu", justify="right")
        table.add_column("flagged", justify="right")
        for row in category_summary(result.warnings):
            table.add_row(row["category"], str(row["count"]), f"{row['area_m2']:,.0f}", f"{to_mu(row['area_m2']):,.1f}",
                          str(row["flagged"]))
        table.add_row("[bold]total warnings[/bold] (without none)", str(result.n_warnings),
                      f"{result.total_area_m2:,.0f}", f"{to_mu(result.total_area_m2):,.1f}")
        console.print(f"change patches found: {detection.n_patches}")
        console.print(f"false-alarm suppression: {detection.suppression or 'off'}")
        if detection.classifier:
            console.print(f"warning classifier: {detection.classifier}")
        console.print(table)
        flags = flag_counts(result.warnings)
        console.print("control-line flags: " + (", ".join(f"{k} {v}" for k, v in flags.items()) or "none"))
        console.print("[bold]outputs[/bold]")
        for label, path in (
            ("change probability (COG)", detection.prob_path),
            ("change mask (COG)", detection.mask_path),
            ("change patches (GeoPackage)", detection.patches_path),
            ("warnings, all columns (GeoPackage)", result.gpkg),
            ("warning list (CSV, UTF-8 BOM)", result.csv),
            ("warning list (XLSX, print-ready)", result.xlsx),
            ("图斑 layer (Shapefile + .cpg)", result.shp),
            ("图斑 layer (GeoPackage 1.2)", result.tuban_gpkg),
            ("report (PDF)", summary["report"] or "not written: no CJK font (apt-get install fonts-noto-cjk)"),
            ("warning store as a QGIS layer", result.store_layer),
            (f"image chips ({len(result.chips)} PNG)", result.xlsx.parent / "chips"),
            ("warning database (SQLite)", summary["database"]),
            ("quicklook (PNG)", summary["quicklook"]),
        ):
            console.print(f"  {label:<30} {path}", soft_wrap=True)
        secs = summary["seconds"]
        console.print(f"time: detect {secs['detect']:.1f} s, warnings {secs['warn']:.1f} s")
