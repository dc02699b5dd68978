"""CLI commands of this area (registered by cspon_rs.cli): ``cspon-rs detect``."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import typer


def _parse_date(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError as exc:
        from cspon_rs.errors import ConfigError

        raise ConfigError(f"{flag}: expected a date like 2024-03-31, got {value!r}") from exc


def detect(
    before: Path = typer.Option(..., "--before", help="Date-1 scene: raster, VRT or folder of band files "
                                "(Sentinel-2 B04/B03/B02/B08, OSCD/SAFE names); its grid is the output grid."),
    after: Path = typer.Option(..., "--after", help="Date-2 scene (same forms); warped onto date 1's grid if needed."),
    out: Path = typer.Option(..., "--out", help="Output folder for change_prob.tif, change_mask.tif, "
                             "change_patches.gpkg."),
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="Checkpoint .safetensors, 'default' "
                                          "(shipped) or 'spectral' (CVA + Otsu, no model)."),
    aoi: Path | None = typer.Option(None, "--aoi", help="Area of interest polygons (any CRS)."),
    config: Path | None = typer.Option(None, "--config", help="YAML settings (configs/detect.yaml)."),
    workers: int | None = typer.Option(None, "--workers", help="Dask worker processes (1 = no Dask)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler, e.g. tcp://host:8786."),
    tile_size: int | None = typer.Option(None, "--tile-size", help="Model window, px (card's by default)."),
    overlap: int | None = typer.Option(None, "--overlap", help="Window overlap, px (tile/4 by default)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Windows per forward pass."),
    block_size: int | None = typer.Option(None, "--block-size", help="Core block per task, px."),
    threshold: float | None = typer.Option(None, "--threshold", help="Mask threshold (card's by default)."),
    min_area: float | None = typer.Option(None, "--min-area", help="Smallest patch written, m² (default "
                                          "min(200, the MMU))."),
    mmu: str | None = typer.Option(None, "--mmu", help="Minimum mapping unit, m²: smaller patches are "
                                   "suppressed (kept, flagged mmu); 'auto' (default) = clip(7 px, 50, 700) m²."),
    radiometry: str | None = typer.Option(None, "--radiometry", help="Per-scene normalisation of each date to "
                                          "the checkpoint's training range: card (default, the card's choice) | "
                                          "none | gain | standardize | percentile | relative."),
    simplify: float | None = typer.Option(None, "--simplify", help="Simplification tolerance, m (default 1)."),
    t1: str | None = typer.Option(None, "--t1", help="Date of the before scene, YYYY-MM-DD (else from name)."),
    t2: str | None = typer.Option(None, "--t2", help="Date of the after scene, YYYY-MM-DD (else from name)."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda."),
    backend: str | None = typer.Option(None, "--backend", help="Model runtime: auto (default: ONNX "
                                       "Runtime on the CPU when installed, else PyTorch) | torch | onnx."),
    precision: str | None = typer.Option(None, "--precision", help="auto | fp32 | fp16 | bf16 (CUDA) | int8 "
                                         "(onnx)."),
    fallback_cpu: bool = typer.Option(False, "--fallback-cpu", help="With --device cuda and no GPU, run on the "
                                      "CPU instead of failing."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    suppress: bool = typer.Option(True, "--suppress/--no-suppress", help="Flag likely false alarms "
                                  "(vegetation, water, below the mapping unit; settings in the config's "
                                  "suppress: section) so they do not become warnings."),
    classifier: str | None = typer.Option(None, "--classifier", help="Warning classifier: auto (the "
                                          "checkpoint's own, default) | PATH | none."),
    min_confidence: float | None = typer.Option(None, "--min-confidence", help="Operating point 0-1: patches "
                                                "scored below it are suppressed (default: the classifier's)."),
    db: str | None = typer.Option(None, "--db", help="Warning store URL: with --county, use the county's "
                                  "promoted model (cspon-rs models promote) unless --checkpoint is given."),
    county: str | None = typer.Option(None, "--county", help="County code whose promoted model to use (with --db)."),
) -> None:
    """Detect change between two scenes of any size (tiled, optionally on Dask) and write COGs + patches."""
    import warnings

    from cspon_rs.config import load_yaml_config
    from cspon_rs.inference.config import DetectConfig
    from cspon_rs.inference.detect import InferenceWarning, detect_pair

    overrides: dict[str, Any] = {
        "checkpoint": checkpoint, "workers": workers, "scheduler": scheduler, "tile_size": tile_size,
        "overlap": overlap, "batch_size": batch_size, "block_size": block_size, "threshold": threshold,
        "min_area_m2": min_area, "simplify_m": simplify, "device": device, "backend": backend,
        "radiometry": radiometry,
        "precision": precision, "fallback_cpu": fallback_cpu or None, "classifier": classifier,
        "min_confidence": min_confidence,
    }
    if config is not None:
        cfg = load_yaml_config(config, DetectConfig, overrides=overrides)
    else:
        from pydantic import ValidationError

        from cspon_rs.config import format_validation_error
        from cspon_rs.errors import ConfigError

        try:
            cfg = DetectConfig.model_validate({k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "command line")) from exc
    if not suppress:
        cfg.suppress.enabled = False
    if mmu is not None:
        cfg.suppress.mmu.min_area_m2 = _mmu_value(mmu)
    if (db is None) != (county is None):
        from cspon_rs.errors import ConfigError

        raise ConfigError("--db and --county go together: give both to use the county's promoted model")
    # --checkpoint, or a checkpoint other than "default" in --config, names the model explicitly.
    explicit = checkpoint is not None or cfg.checkpoint != "default"
    if db is not None and county is not None:
        if explicit:
            typer.echo(f"model: --checkpoint {cfg.checkpoint} (given explicitly; county {county}'s promoted model "
                       "not used)")
        else:
            cfg.checkpoint = _county_checkpoint(db, county, cfg.checkpoint)
    before, after = _scene_input(before, out), _scene_input(after, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)  # printed in the summary instead
        result = detect_pair(
            before, after, out, aoi=aoi, t1=_parse_date(t1, "--t1"), t2=_parse_date(t2, "--t2"),
            progress=progress, **cfg.detect_kwargs(),
        )
    typer.echo(result.summary())


def _mmu_value(text: str) -> float | Literal["auto"]:
    """``--mmu``: ``auto`` or a non-negative area in m²."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        from cspon_rs.errors import ConfigError

        raise ConfigError(f"--mmu: expected 'auto' or an area in m² >= 0, got {text!r}")
    return value


def _scene_input(path: Path, out: Path) -> Path:
    """A folder of single-band files, or a raster/VRT whose described bands hold B04/B03/B02/B08 in another
    order, becomes a stack in the model's order under ``<out>/stacks``; any other raster is used as it is."""
    from rasterio.errors import RasterioError

    from cspon_rs.geo.bandstack import S2_RGBN, as_scene, band_descriptions

    if path.is_dir():
        typer.echo(f"{path}: folder of band files, stacking {'/'.join(S2_RGBN)}")
    elif not path.is_file():
        return path  # detect_pair's input check names the missing file
    else:
        try:
            described = {str(d).upper() for d in band_descriptions(path) if d}
        except RasterioError:
            return path  # not a raster: detect_pair's input check names the file
        if not set(S2_RGBN) <= described:
            return path
    (out / "stacks").mkdir(parents=True, exist_ok=True)
    return as_scene(path, cache_dir=out / "stacks")


def _county_checkpoint(db: str, county: str, fallback: str) -> str:
    """The county's promoted checkpoint (checked against its registered sha256), else ``fallback``; says which."""
    from cspon_rs.store.db import open_existing_store
    from cspon_rs.store.model_registry import current_model, verify_checkpoint

    sessions = open_existing_store(db)
    try:
        with sessions() as session:
            model = current_model(session, county)
            if model is None:
                typer.echo(f"model: county {county} has no promoted model; using {fallback}")
                return fallback
            path = verify_checkpoint(model)
            typer.echo(f"model: county {county}'s promoted model {model.id} ({model.detector}, sha256 "
                       f"{model.checkpoint_sha256[:12]}…) {path}")
            return str(path)
    finally:
        sessions.kw["bind"].dispose()


def register(app: typer.Typer) -> None:
    """Add this area's subcommands to ``app``."""
    app.command("detect")(detect)
