"""County-scale change detection on a before/after scene pair: :func:`detect_pair`.

Pipeline (nothing holds a whole scene in memory):

1. checks -- CRS, bands against the model card, overlap, AOI (:mod:`cspon_rs.inference.checks`);
2. block jobs -- paths + rectangles (:mod:`cspon_rs.inference.blocks`), run in this process or on Dask
   (:mod:`cspon_rs.inference.execute`), results streamed into tiled working GeoTIFFs as they finish;
3. finish -- Cloud-Optimized GeoTIFFs, mask vectorised into ``change_patches`` (:mod:`.vectorize`), false
   alarms flagged (``suppressed_by``, :mod:`.suppress`) but kept in the layer;
4. temporary names are renamed to ``change_prob.tif``, ``change_mask.tif``, ``change_patches.gpkg``.

Pixels that are nodata in either date or lie outside the AOI are nodata in both rasters and never change.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.errors import RasterioIOError
from rasterio.features import geometry_mask
from rasterio.windows import transform as window_transform
from shapely.geometry import box

from cspon_rs.errors import ConfigError, CorruptFileError
from cspon_rs.geo.raster import GridInfo, aligned_pair
from cspon_rs.geo.vector import write_vector_atomic
from cspon_rs.inference.blocks import BlockJob, BlockResult
from cspon_rs.inference.checks import check_pair, date_from_name, load_aoi
from cspon_rs.inference.execute import LOCAL, dask_client, iter_block_results
from cspon_rs.inference.gdal_env import bounded_gdal_cache
from cspon_rs.inference.outputs import MASK_NODATA, PROB_NODATA, RasterSink, partial_name, to_cog
from cspon_rs.inference.predictors import (
    SPECTRAL,
    SPECTRAL_DETECTOR_ID,
    DetectorSpec,
    spectral_parameters,
    torch_threads_per_worker,
)
from cspon_rs.inference.suppress import SuppressConfig, apply_suppression
from cspon_rs.inference.vectorize import PATCH_LAYER, PatchAttributes, vectorize_mask
from cspon_rs.inference.windows import (
    BlendKind,
    PixelWindow,
    plan_blocks,
    tile_origins,
    tiles_for_block,
    validate_tiling,
)
from cspon_rs.models.checkpoint import load_card, pick_default, resolve_checkpoint

__all__ = ["MASK_NAME", "PATCHES_NAME", "PROB_NAME", "DetectionResult", "InferenceWarning", "detect_pair"]

PROB_NAME = "change_prob.tif"
MASK_NAME = "change_mask.tif"
PATCHES_NAME = "change_patches.gpkg"


class InferenceWarning(UserWarning):
    """A run finished but something deserves attention (e.g. the scene holds no valid pixel)."""


@dataclass
class DetectionResult:
    """Outputs and figures of one :func:`detect_pair` run.

    Attributes:
        prob_path: ``change_prob.tif`` (float32 COG, nodata -1, scene CRS/transform).
        mask_path: ``change_mask.tif`` (uint8 COG, 1 change / 0 none / 255 nodata).
        patches_path: ``change_patches.gpkg`` (layer ``change_patches``, scene CRS).
        detector: Detector id written on the patches.
        scene_before, scene_after: Absolute paths of the scenes (written on every patch).
        scene_before_sha256, scene_after_sha256: SHA-256 of the scene files, computed once per run.
        model_sha256: SHA-256 of the checkpoint weights (``None`` for the spectral baseline).
        threshold: Probability threshold used for the mask.
        width: Scene columns (before grid).
        height: Scene rows.
        warped: Date 2 was warped onto date 1's grid.
        n_blocks: Blocks processed.
        n_windows: Model windows run, counting windows re-run by neighbouring blocks (halo).
        unique_windows: Distinct windows of the scene grid (``n_windows / unique_windows`` is the
            halo overhead of the block size).
        valid_pixels: Pixels valid in both dates and inside the AOI.
        changed_pixels: Pixels flagged as change.
        n_patches: Patches written (after the area filter), suppressed ones included.
        n_suppressed: Patches flagged by a suppression cue (``suppressed_by`` set; no warning is made).
        suppression: One line on the suppression step (counts per cue, cues skipped and why).
        changed_area_m2: Total area of the written patches, m².
        timings: Seconds per stage (``check``, ``predict``, ``model``, ``read``, ``cog``, ``vectorize``,
            ``total``); ``model``/``read`` are summed over tasks.
        warnings: Human-readable warnings (also emitted as :class:`InferenceWarning`).
    """

    prob_path: Path
    mask_path: Path
    patches_path: Path
    detector: str
    threshold: float
    width: int
    height: int
    warped: bool
    n_blocks: int = 0
    n_windows: int = 0
    unique_windows: int = 0
    valid_pixels: int = 0
    changed_pixels: int = 0
    n_patches: int = 0
    n_suppressed: int = 0
    suppression: str = ""
    detector_choice: str = ""
    scene_before: str = ""
    scene_after: str = ""
    scene_before_sha256: str | None = None
    scene_after_sha256: str | None = None
    model_sha256: str | None = None
    changed_area_m2: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def megapixels_per_s(self) -> float:
        """Scene megapixels per second of the prediction stage."""
        seconds = self.timings.get("predict", 0.0)
        return self.width * self.height / 1e6 / seconds if seconds > 0 else float("nan")

    def summary(self) -> str:
        """A few lines for people: outputs, counts, speed."""
        lines = [
            f"detector       {self.detector} (threshold {self.threshold:.2f})"
            + (f"; {self.detector_choice}" if self.detector_choice else ""),
            *([f"model sha256   {self.model_sha256}"] if self.model_sha256 else []),
            f"scene          {self.width} x {self.height} px, date 2 {'warped onto' if self.warped else 'already on'}"
            " date 1 grid",
            f"windows        {self.n_windows} in {self.n_blocks} blocks ({self.unique_windows} distinct)",
            f"changed        {self.changed_pixels} of {self.valid_pixels} valid px; {self.n_patches} patches, "
            f"{self.changed_area_m2:,.0f} m² ({self.changed_area_m2 / (10000.0 / 15.0):,.1f} mu)",
            f"suppression    {self.suppression or 'off'}",
            f"time           {self.timings.get('total', 0.0):.1f} s total, {self.megapixels_per_s:.2f} Mpx/s predict",
            f"outputs        {self.prob_path}",
            f"               {self.mask_path}",
            f"               {self.patches_path}",
        ]
        lines += [f"warning        {w}" for w in self.warnings]
        return "\n".join(lines)


def _spectral_spec(before: Path, after: Path, grid: GridInfo, aoi: Any | None, batch_size: int) -> DetectorSpec:
    """Estimate the CVA scale and Otsu threshold from a decimated read of the whole aligned pair."""
    factor = max(1, math.ceil(math.sqrt(grid.width * grid.height / 4e6)))
    h, w = math.ceil(grid.height / factor), math.ceil(grid.width / factor)
    with aligned_pair(before, after) as (src_a, src_b):
        try:
            a = src_a.read(out_shape=(src_a.count, h, w), out_dtype="float32")
            valid = src_a.dataset_mask(out_shape=(h, w)) > 0
        except RasterioIOError as exc:
            raise CorruptFileError(f"{before}: pixels unreadable ({exc})") from exc
        try:
            b = src_b.read(out_shape=(src_b.count, h, w), out_dtype="float32")
            valid &= src_b.dataset_mask(out_shape=(h, w)) > 0
        except RasterioIOError as exc:
            raise CorruptFileError(f"{after}: pixels unreadable ({exc})") from exc
    if aoi is not None:
        from rasterio import Affine

        small = grid.transform @ Affine.scale(grid.width / w, grid.height / h)
        valid &= geometry_mask([aoi], out_shape=(h, w), transform=small, invert=True)
    scale, threshold = spectral_parameters(a, b, valid)
    return DetectorSpec(SPECTRAL, batch_size=batch_size, spectral_scale=scale, spectral_threshold=threshold)


def scene_bands(path: Path) -> int | list[str | None]:
    """Band descriptions of a raster when every band has one, else its band count (picks ``default``)."""
    from cspon_rs.geo.raster import open_raster

    with open_raster(path) as src:
        names = list(src.descriptions)
        return names if all(names) else int(src.count)


def _iso(value: date | None, path: Path) -> str | None:
    found = value if value is not None else date_from_name(path)
    return found.isoformat() if found is not None else None


@bounded_gdal_cache
def detect_pair(
    before: str | Path,
    after: str | Path,
    out_dir: str | Path,
    *,
    checkpoint: str | Path,
    aoi: str | Path | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    workers: int = 1,
    scheduler: str | None = None,
    threshold: float | None = None,
    min_area_m2: float = 200.0,
    simplify_m: float = 1.0,
    t1: date | None = None,
    t2: date | None = None,
    device: str = "auto",
    blend: BlendKind = "cosine",
    block_size: int = 2048,
    progress: bool = True,
    torch_threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    suppress: SuppressConfig | None = None,
) -> DetectionResult:
    """Detect change between two scenes of any size and write probability, mask and patches.

    Args:
        before: Date-1 raster; its grid (CRS, transform) is the output grid.
        after: Date-2 raster; warped on the fly onto date 1's grid when CRS/resolution/origin differ.
        out_dir: Output folder (created); existing outputs there are replaced at the very end.
        checkpoint: Checkpoint path (``.safetensors`` or its card ``.json``), or ``"spectral"`` for the
            non-learned CVA + Otsu detector, or ``"default"`` for the checkpoint shipped with cspon-rs.
        aoi: Optional polygon layer (any CRS, reprojected); pixels outside it are nodata, never change.
        tile_size: Model window edge in pixels (multiple of 32); the card's when omitted (256 for spectral).
        overlap: Overlap of neighbouring windows in pixels; ``tile_size // 4`` when omitted.
        batch_size: Windows per forward pass.
        workers: Dask worker processes; 1 with no ``scheduler`` runs in this process without Dask.
        scheduler: ``tcp://host:port`` of a running Dask scheduler (workers must see the same paths),
            ``"local"`` to force a local cluster, or None.
        threshold: Probability threshold of the mask; the card's when omitted (0.5 for spectral).
        min_area_m2: Patches smaller than this (m²) are not written to the GeoPackage.
        simplify_m: Polygon simplification tolerance in metres (0 keeps pixel outlines).
        t1: Date of the before scene (parsed from its file name when omitted).
        t2: Date of the after scene (parsed from its file name when omitted).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        blend: Window weighting: ``cosine`` (default), ``gaussian`` or ``uniform``.
        block_size: Core block edge in pixels per task (memory per task grows with its square).
        progress: Show a progress bar (windows done / total, Mpx/s).
        torch_threads: CPU threads of PyTorch in each process that runs the model. ``None``: the cores
            shared out among the workers of a local cluster (Dask starts workers single-threaded), the
            process default otherwise; 0 always leaves the process default.
        on_progress: Called after each block with ``(windows done, windows total)`` (e.g. to report a job's
            progress); if it raises, the run stops and no output is written.
        suppress: False-alarm suppression cues (:mod:`cspon_rs.inference.suppress`). ``None`` runs none
            (the ``suppressed_by`` column is still written, all null); ``cspon-rs detect`` and
            ``configs/detect.yaml`` pass the validated defaults. Suppressed patches stay in the layer.

    Returns:
        The :class:`DetectionResult`.

    Raises:
        MissingFileError, CorruptFileError, CRSError, BandMismatchError, GridMismatchError,
        CheckpointError, ConfigError: Bad inputs, with the file and value named.
    """
    t_start = time.perf_counter()
    before, after, out_dir = Path(before), Path(after), Path(out_dir)
    timings: dict[str, float] = {}
    messages: list[str] = []

    # 1. Detector and checks -------------------------------------------------------------------------
    is_spectral = str(checkpoint) == SPECTRAL
    card = None
    choice = ""
    if str(checkpoint) == "default":
        bands = scene_bands(before)
        name, why = pick_default(bands)
        choice = f"default = shipped '{name}': {why}"
        checkpoint = resolve_checkpoint(name)
    if not is_spectral:
        checkpoint = resolve_checkpoint(checkpoint)
        card = load_card(checkpoint)  # the model itself is loaded by whoever predicts (once per process)
    info = check_pair(before, after, card=card)
    grid = info.before
    # Identity of the inputs, computed once per file per run: stored patches (and the warnings made from
    # them) tie back to exactly these pixels and this model.
    from cspon_rs.geo.files import file_sha256

    scene_a, scene_b = str(before.resolve()), str(after.resolve())
    sha_a, sha_b = file_sha256(before), file_sha256(after)
    sha_model = None if is_spectral else file_sha256(checkpoint)
    tile = int(tile_size if tile_size is not None else (card.tile_size if card is not None else 256))
    ovl = int(overlap if overlap is not None else tile // 4)
    validate_tiling(tile, ovl)
    thr = float(threshold if threshold is not None else (card.threshold if card is not None else 0.5))
    if not 0.0 < thr < 1.0:
        raise ConfigError(f"threshold must be in (0, 1), got {thr}")
    if min_area_m2 < 0 or simplify_m < 0:
        raise ConfigError(f"min_area_m2 and simplify_m must be >= 0, got {min_area_m2}, {simplify_m}")
    aoi_geom = load_aoi(aoi, grid) if aoi is not None else None
    if is_spectral:
        spec = _spectral_spec(before, after, grid, aoi_geom, batch_size)
        detector_id = SPECTRAL_DETECTOR_ID
    else:
        if torch_threads is None:
            # Local Dask worker processes start single-threaded: share the cores out among them.
            local_cluster = (scheduler is None and workers > 1) or scheduler == LOCAL
            torch_threads = torch_threads_per_worker(workers) if local_cluster else 0
        spec = DetectorSpec(
            str(Path(checkpoint).resolve()), device=device, batch_size=batch_size, torch_threads=torch_threads
        )
        detector_id = card.detector_id  # type: ignore[union-attr]
    timings["check"] = time.perf_counter() - t_start

    # 2. Jobs ---------------------------------------------------------------------------------------------
    blocks = plan_blocks(grid.height, grid.width, block_size)
    if aoi_geom is not None:
        blocks = [b for b in blocks if aoi_geom.intersects(_block_box(b, grid))]
    jobs = [
        BlockJob(i, str(before.resolve()), str(after.resolve()), b, grid.height, grid.width, tile, ovl, blend, spec)
        for i, b in enumerate(blocks)
    ]
    planned = {j.index: len(tiles_for_block(j.block, grid.height, grid.width, tile, ovl)[0]) for j in jobs}

    out_dir.mkdir(parents=True, exist_ok=True)
    finals = {"prob": out_dir / PROB_NAME, "mask": out_dir / MASK_NAME, "patches": out_dir / PATCHES_NAME}
    work = {k: partial_name(p, ".work") for k, p in finals.items() if k != "patches"}
    temps = {k: partial_name(p) for k, p in finals.items()}
    result = DetectionResult(
        prob_path=finals["prob"], mask_path=finals["mask"], patches_path=finals["patches"], detector=detector_id,
        threshold=thr, width=grid.width, height=grid.height, warped=info.warped, n_blocks=len(jobs),
        n_windows=sum(planned.values()), unique_windows=len(tile_origins(grid.height, grid.width, tile, ovl)),
        scene_before=scene_a, scene_after=scene_b, scene_before_sha256=sha_a, scene_after_sha256=sha_b,
        model_sha256=sha_model,
    )
    try:
        t0 = time.perf_counter()
        read_s = model_s = 0.0
        sink_kw: dict[str, Any] = {"width": grid.width, "height": grid.height, "crs": grid.crs,
                                   "transform": grid.transform}
        with RasterSink(work["prob"], "prob", **sink_kw) as prob_sink, \
                RasterSink(work["mask"], "mask", **sink_kw) as mask_sink, \
                _progress_bar(result.n_windows, progress) as bar:
            use_dask = scheduler is not None or workers > 1
            with (dask_client(workers, scheduler) if use_dask else _null()) as client:
                done_px = done_windows = 0
                for res in iter_block_results(jobs, client=client):
                    valid = _valid_in_aoi(res, grid, aoi_geom)
                    change = valid & (res.prob >= thr)
                    prob_sink.write(res.block, np.where(valid, res.prob, np.float32(PROB_NODATA)))
                    mask_sink.write(res.block, np.where(valid, change.astype(np.uint8), np.uint8(MASK_NODATA)))
                    result.valid_pixels += int(valid.sum())
                    result.changed_pixels += int(change.sum())
                    read_s += res.read_s
                    model_s += res.model_s
                    done_px += res.block.size
                    done_windows += planned[res.index]
                    if bar is not None:
                        bar.update(planned[res.index])
                        bar.set_postfix_str(f"{done_px / 1e6 / (time.perf_counter() - t0):.2f} Mpx/s")
                    if on_progress is not None:
                        on_progress(done_windows, result.n_windows)
        timings["predict"] = time.perf_counter() - t0
        timings["read"], timings["model"] = read_s, model_s

        if result.valid_pixels == 0:
            msg = (f"no valid pixel: {before.name} / {after.name} are nodata everywhere"
                   f"{' inside the AOI' if aoi_geom is not None else ''}; outputs are empty")
            messages.append(msg)
            warnings.warn(msg, InferenceWarning, stacklevel=2)

        # 3. COGs and patches ---------------------------------------------------------------------------
        t0 = time.perf_counter()
        to_cog(work["prob"], temps["prob"], "prob")
        to_cog(work["mask"], temps["mask"], "mask")
        for path in work.values():
            path.unlink()
        timings["cog"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        attrs = PatchAttributes(t1=_iso(t1, before), t2=_iso(t2, after), detector=detector_id,
                                scene_before=scene_a, scene_after=scene_b, scene_before_sha256=sha_a,
                                scene_after_sha256=sha_b, model_sha256=sha_model)
        patches = vectorize_mask(temps["mask"], temps["prob"], attrs, min_area_m2=min_area_m2,
                                 simplify_m=simplify_m, block_size=max(block_size, 256))
        t_sup = time.perf_counter()
        bands = list(card.bands) if card is not None else list(grid.band_descriptions)
        suppressed = apply_suppression(patches, suppress, before=before, after=after, bands=bands)
        patches = suppressed.patches
        result.n_suppressed = suppressed.n_suppressed
        result.suppression = suppressed.summary() if suppress is not None and suppress.enabled else ""
        timings["suppress"] = time.perf_counter() - t_sup
        write_vector_atomic(patches, temps["patches"], layer=PATCH_LAYER, driver="GPKG",
                            geometry_type="Polygon")
        timings["vectorize"] = time.perf_counter() - t0
        result.n_patches = len(patches)
        result.changed_area_m2 = float(patches["area_m2"].sum()) if len(patches) else 0.0

        # 4. Publish: rename temporary files to their final names -------------------------------------
        for key in ("prob", "mask", "patches"):
            os.replace(temps[key], finals[key])
    finally:
        for path in [*work.values(), *temps.values()]:
            if path.exists():
                path.unlink()
    timings["total"] = time.perf_counter() - t_start
    result.timings = timings
    result.warnings = messages
    result.detector_choice = choice
    return result


def _block_box(block: PixelWindow, grid: GridInfo) -> Any:
    x0, y0 = grid.transform @ (block.col_off, block.row_off)
    x1, y1 = grid.transform @ (block.col_end, block.row_end)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _valid_in_aoi(res: BlockResult, grid: GridInfo, aoi: Any | None) -> np.ndarray:
    if aoi is None:
        return res.valid
    wt = window_transform(res.block.to_rasterio(), grid.transform)
    inside = geometry_mask([aoi], out_shape=res.valid.shape, transform=wt, invert=True)
    out: np.ndarray = res.valid & inside
    return out


class _null:
    """Context manager yielding None (no Dask client)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _progress_bar:
    """tqdm bar over model windows, or None when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bar: Any = None

    def __enter__(self) -> Any:
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, unit="win", desc="detect", dynamic_ncols=True)
        return self.bar

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
