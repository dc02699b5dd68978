"""County-scale change detection on a before/after scene pair: :func:`detect_pair`.

Pipeline (nothing holds a whole scene in memory):

1. checks -- CRS, bands against the model card, overlap, AOI (:mod:`cspon_rs.inference.checks`);
2. block jobs -- paths + rectangles (:mod:`cspon_rs.inference.blocks`); each block owns whole windows of
   one global grid, so every window is predicted once; run in this process (reads overlapped with the
   model) or on Dask (:mod:`cspon_rs.inference.execute`); block borders are completed from the neighbours'
   spill (:mod:`cspon_rs.inference.accumulate`) and streamed into tiled working GeoTIFFs;
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
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from rasterio.errors import RasterioIOError
from rasterio.features import geometry_mask
from rasterio.windows import transform as window_transform
from shapely.geometry import box

from cspon_rs.errors import ConfigError, CorruptFileError
from cspon_rs.geo.raster import GridInfo, aligned_pair
from cspon_rs.geo.vector import write_vector_atomic
from cspon_rs.inference.accumulate import BlendAccumulator
from cspon_rs.inference.blocks import OwnedJob
from cspon_rs.inference.checks import check_pair, date_from_name, load_aoi
from cspon_rs.inference.classify import resolve_classifier, score_patches
from cspon_rs.inference.execute import LOCAL, dask_client, iter_owned_results
from cspon_rs.inference.gdal_env import bounded_gdal_cache
from cspon_rs.inference.outputs import MASK_NODATA, PROB_NODATA, RasterSink, partial_name, to_cog
from cspon_rs.inference.predictors import (
    SPECTRAL,
    SPECTRAL_DETECTOR_ID,
    Backend,
    DetectorSpec,
    Precision,
    check_backend,
    check_device,
    spectral_parameters,
    torch_threads_per_worker,
)
from cspon_rs.inference.radiometry import Radiometry, measure_date, plan_radiometry
from cspon_rs.inference.suppress import SuppressConfig, apply_suppression, default_mmu_m2
from cspon_rs.inference.vectorize import PATCH_LAYER, PatchAttributes, vectorize_mask
from cspon_rs.inference.windows import (
    BlendKind,
    OwnedBlock,
    PixelWindow,
    plan_owned_blocks,
    tile_origins,
    validate_tiling,
)
from cspon_rs.models.checkpoint import load_card, pick_default, resolve_checkpoint

__all__ = [
    "DEFAULT_OVERLAP_PX",
    "DEFAULT_TILE_PX",
    "MASK_NAME",
    "PATCHES_NAME",
    "PROB_NAME",
    "DetectOptions",
    "DetectionResult",
    "InferenceWarning",
    "default_tiling",
    "detect_pair",
    "zero_patch_reason",
]

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
        n_windows: Model windows planned (each window of the grid once; fewer with an AOI).
        unique_windows: Distinct windows of the scene grid.
        valid_pixels: Pixels valid in both dates and inside the AOI.
        changed_pixels: Pixels flagged as change.
        n_patches: Patches written (after the area filter), suppressed ones included.
        n_suppressed: Patches flagged by a suppression cue (``suppressed_by`` set; no warning is made).
        suppression: One line on the suppression step (counts per cue, cues skipped and why).
        changed_area_m2: Total area of the written patches, m².
        timings: Seconds per stage (``check``, ``predict``, ``model``, ``read``, ``cog``, ``vectorize``,
            ``total``); ``model``/``read`` are summed over tasks.
        max_prob: Highest change probability over the valid pixels.
        pixel_size_m: Pixel edge of the before grid, m (None when it cannot be measured).
        min_area_m2: Patches smaller than this were not written (the vectoriser's floor), m².
        radiometry: What was measured on each date and how it was brought to the card's range
            (:mod:`cspon_rs.inference.radiometry`); its maps give the pixels in the model's units.
        empty_reason: When no patch (or no unsuppressed patch) came out, why, in one line.
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
    classifier: str = ""
    detector_choice: str = ""
    scene_before: str = ""
    scene_after: str = ""
    scene_before_sha256: str | None = None
    scene_after_sha256: str | None = None
    model_sha256: str | None = None
    changed_area_m2: float = 0.0
    max_prob: float = float("nan")
    pixel_size_m: float | None = None
    min_area_m2: float = 0.0
    radiometry: Radiometry | None = None
    empty_reason: str = ""
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
            *([f"input          {line}" for line in self.radiometry.lines()] if self.radiometry else []),
            *([f"               radiometry: {self.radiometry.reason}"] if self.radiometry and
              self.radiometry.reason else []),
            *([f"result         {self.empty_reason}"] if self.empty_reason else []),
            *([f"classifier     {self.classifier}"] if self.classifier else []),
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


#: Default model window edge (px): large windows, so the blended margin costs little (the models are fully
#: convolutional; scenes smaller than this use one window the size of the scene, rounded up to 32 px).
DEFAULT_TILE_PX = 1024
#: Default overlap of neighbouring windows (px): the blended margin.
DEFAULT_OVERLAP_PX = 32


class DetectOptions(BaseModel):
    """Every setting of :func:`detect_pair` except the two scenes and the output folder.

    The keyword arguments of :func:`detect_pair` are exactly these fields (``detect_pair(b, a, out,
    tile_size=512)`` is ``detect_pair(b, a, out, DetectOptions(tile_size=512))``).

    Attributes:
        checkpoint: Checkpoint path (``.safetensors`` or its card ``.json``), ``"spectral"`` (the non-learned
            CVA + Otsu detector) or ``"default"`` (the checkpoint shipped with cspon-rs for the bands).
        aoi: Optional polygon layer (any CRS, reprojected); pixels outside it are nodata, never change.
        tile_size: Model window edge in px (multiple of 32); :data:`DEFAULT_TILE_PX` when omitted
            (smaller scenes: the scene edge rounded up to 32).
        overlap: Overlap of neighbouring windows in px (the blended margin); ``min(32, tile_size // 4)``.
        batch_size: Most windows per forward pass (also capped by pixels per pass, see
            :class:`~cspon_rs.inference.predictors.DetectorSpec`).
        workers: Dask worker processes; 1 with no ``scheduler`` runs in this process without Dask.
        scheduler: ``tcp://host:port`` of a running Dask scheduler (workers must see the same paths),
            ``"local"`` to force a local cluster, or None.
        threshold: Probability threshold of the mask; the card's when omitted (0.5 for spectral).
        min_area_m2: Patches smaller than this (m²) are not written; default min(200 m², the ``auto``
            minimum mapping unit of the pixel size), so that the MMU, not this floor, decides.
        simplify_m: Polygon simplification tolerance in metres (0 keeps pixel outlines).
        t1: Date of the before scene (parsed from its file name when omitted).
        t2: Date of the after scene (parsed from its file name when omitted).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        backend: ``"auto"`` (ONNX Runtime on the CPU when onnxruntime is installed and the model exports,
            PyTorch on CUDA or otherwise), ``"torch"`` (PyTorch eager) or ``"onnx"`` (exported model on ONNX
            Runtime, :mod:`cspon_rs.inference.onnx_backend`).
        precision: ``"auto"`` (float16 autocast on CUDA, float32 on CPU), ``"fp32"``, ``"fp16"``, ``"bf16"``
            (CUDA autocast) or ``"int8"`` (ONNX Runtime dynamic quantisation, CPU).
        fallback_cpu: With ``device="cuda"`` and no GPU, run on the CPU (one warning) instead of failing.
        blend: Window weighting: ``cosine`` (default), ``gaussian`` or ``uniform``.
        block_size: Block edge in px per task (memory per task grows with its square).
        progress: Show a progress bar (windows done / total, Mpx/s).
        torch_threads: CPU threads of the model runtime in each process that runs it. ``None``: the cores
            shared out among the workers of a local cluster, the process default otherwise; 0 always
            leaves the process default.
        on_progress: Called after each block with ``(windows done, windows total)``; if it raises, the run
            stops and no output is written.
        suppress: False-alarm suppression cues (:mod:`cspon_rs.inference.suppress`); ``None`` runs none.
        radiometry: Per-scene radiometric normalisation (:mod:`cspon_rs.inference.radiometry`): ``"card"``
            (the card's default, chosen on validation), ``"none"``, ``"gain"``, ``"standardize"``, ``"percentile"`` or
            ``"relative"``.
        classifier: Warning classifier (:mod:`cspon_rs.inference.classify`): ``"auto"`` the checkpoint's own
            (``<checkpoint>.classifier.json``; none for checkpoints without one), a path, or ``None`` / ``"none"``
            (confidence = mean change probability, nothing suppressed by it).
        min_confidence: Operating point overriding the classifier's (a county's setting, 0-1).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    checkpoint: str | Path = "default"
    aoi: str | Path | None = None
    tile_size: int | None = Field(None, gt=0)
    overlap: int | None = Field(None, ge=0)
    batch_size: int = Field(8, gt=0)
    workers: int = Field(1, ge=1)
    scheduler: str | None = None
    threshold: float | None = None
    min_area_m2: float | None = Field(None, ge=0.0)
    simplify_m: float = Field(1.0, ge=0.0)
    t1: date | None = None
    t2: date | None = None
    device: str = "auto"
    backend: Backend = "auto"
    precision: Precision = "auto"
    fallback_cpu: bool = False
    blend: BlendKind = "cosine"
    block_size: int = Field(2048, gt=0)
    progress: bool = True
    torch_threads: int | None = None
    on_progress: Callable[[int, int], None] | None = None
    suppress: SuppressConfig | None = None
    radiometry: Literal["card", "none", "gain", "standardize", "percentile", "relative"] = "card"
    classifier: str | Path | None = "auto"
    min_confidence: float | None = Field(None, ge=0.0, le=1.0)


@dataclass
class _Run:
    """What the checks and the detector set-up decided for one run (internal)."""

    before: Path
    after: Path
    opts: DetectOptions
    info: Any
    grid: GridInfo
    card: Any
    spec: DetectorSpec
    detector_id: str
    choice: str
    tile: int
    overlap: int
    threshold: float
    aoi_geom: Any
    scene_a: str
    scene_b: str
    sha_a: str | None
    sha_b: str | None
    sha_model: str | None
    radiometry: Radiometry | None = None
    pixel_size_m: float | None = None
    min_area_m2: float = 200.0


@bounded_gdal_cache
def detect_pair(
    before: str | Path,
    after: str | Path,
    out_dir: str | Path,
    options: DetectOptions | None = None,
    **settings: Any,
) -> DetectionResult:
    """Detect change between two scenes of any size and write probability, mask and patches.

    Args:
        before: Date-1 raster; its grid (CRS, transform) is the output grid.
        after: Date-2 raster; warped on the fly onto date 1's grid when CRS/resolution/origin differ.
        out_dir: Output folder (created); existing outputs there are replaced at the very end.
        options: All settings (:class:`DetectOptions`); keyword ``settings`` override its fields.
        **settings: Fields of :class:`DetectOptions` by name (``checkpoint=``, ``workers=``, ``backend=`` ...).

    Returns:
        The :class:`DetectionResult`.

    Raises:
        MissingFileError, CorruptFileError, CRSError, BandMismatchError, GridMismatchError,
        CheckpointError, ConfigError, MissingDependencyError: Bad inputs, with the file and value named.
    """
    t_start = time.perf_counter()
    opts = _options(options, settings)
    run = _prepare(Path(before), Path(after), opts)
    timings = {"check": time.perf_counter() - t_start}
    blocks, jobs = _plan_jobs(run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    finals = {"prob": out / PROB_NAME, "mask": out / MASK_NAME, "patches": out / PATCHES_NAME}
    work = {k: partial_name(p, ".work") for k, p in finals.items() if k != "patches"}
    temps = {k: partial_name(p) for k, p in finals.items()}
    result = DetectionResult(
        prob_path=finals["prob"], mask_path=finals["mask"], patches_path=finals["patches"],
        detector=run.detector_id, threshold=run.threshold, width=run.grid.width, height=run.grid.height,
        warped=run.info.warped, n_blocks=len(jobs), n_windows=sum(len(j.block.origins) for j in jobs),
        unique_windows=len(tile_origins(run.grid.height, run.grid.width, run.tile, run.overlap)),
        scene_before=run.scene_a, scene_after=run.scene_b, scene_before_sha256=run.sha_a,
        scene_after_sha256=run.sha_b, model_sha256=run.sha_model, detector_choice=run.choice,
        radiometry=run.radiometry, pixel_size_m=run.pixel_size_m, min_area_m2=run.min_area_m2,
    )
    try:
        timings |= _predict_to_rasters(run, blocks, jobs, work, result)
        if result.valid_pixels == 0:
            msg = (f"no valid pixel: {run.before.name} / {run.after.name} are nodata everywhere"
                   f"{' inside the AOI' if run.aoi_geom is not None else ''}; outputs are empty")
            result.warnings.append(msg)
            warnings.warn(msg, InferenceWarning, stacklevel=2)
        timings |= _write_cogs(work, temps)
        timings |= _write_patches(run, temps, result)
        result.empty_reason = zero_patch_reason(result, run.threshold)
        if run.radiometry is not None:
            result.warnings += list(run.radiometry.notes)
        for key in ("prob", "mask", "patches"):  # publish: temporary names -> final names
            os.replace(temps[key], finals[key])
    finally:
        for path in [*work.values(), *temps.values()]:
            if path.exists():
                path.unlink()
    timings["total"] = time.perf_counter() - t_start
    result.timings = timings
    return result


def _options(options: DetectOptions | None, settings: dict[str, Any]) -> DetectOptions:
    """Validated options: ``options`` with ``settings`` (keyword arguments) applied on top."""
    from pydantic import ValidationError

    from cspon_rs.config import format_validation_error

    base = options.model_dump(exclude_unset=True) if options is not None else {}
    try:
        return DetectOptions.model_validate({**base, **settings})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "detect_pair")) from exc


def default_tiling(height: int, width: int, tile_size: int | None, overlap: int | None) -> tuple[int, int]:
    """Window edge and overlap (px) for a scene: the given ones, else balanced defaults.

    Without a ``tile_size`` the fewest windows of at most :data:`DEFAULT_TILE_PX` that cover each axis are
    made as small as they can be (multiple of 32): a 1536 px scene gets 2 x 2 windows of 800 px (1.09 x the
    scene's pixels predicted) instead of 2 x 2 of 1024 px pushed back from the edge (1.78 x).
    """
    if tile_size is None:
        ovl = int(overlap if overlap is not None else DEFAULT_OVERLAP_PX)
        tile_size = max(_balanced_edge(height, DEFAULT_TILE_PX, ovl), _balanced_edge(width, DEFAULT_TILE_PX, ovl))
    ovl = int(overlap if overlap is not None else min(DEFAULT_OVERLAP_PX, tile_size // 4))
    validate_tiling(int(tile_size), ovl)
    return int(tile_size), ovl


def _balanced_edge(length: int, max_tile: int, overlap: int) -> int:
    """Smallest multiple-of-32 window edge covering ``length`` px with as few windows as ``max_tile`` needs."""
    if length <= max_tile:
        return 32 * math.ceil(max(length, 32) / 32)
    n = math.ceil((length - overlap) / (max_tile - overlap))
    return min(max_tile, 32 * math.ceil((length + (n - 1) * overlap) / n / 32))


def _prepare(before: Path, after: Path, opts: DetectOptions) -> _Run:
    """Checks, checkpoint, tiling and the detector spec (nothing is predicted yet)."""
    checkpoint = opts.checkpoint
    is_spectral = str(checkpoint) == SPECTRAL
    card = None
    choice = ""
    if str(checkpoint) == "default":
        name, why = pick_default(scene_bands(before))
        choice = f"default = shipped '{name}': {why}"
        checkpoint = resolve_checkpoint(name)
    if not is_spectral:
        checkpoint = resolve_checkpoint(checkpoint)
        card = load_card(checkpoint)  # the model itself is loaded by whoever predicts (once per process)
    info = check_pair(before, after, card=card)
    grid = info.before
    from cspon_rs.geo.files import file_sha256

    tile, ovl = default_tiling(grid.height, grid.width, opts.tile_size, opts.overlap)
    thr = float(opts.threshold if opts.threshold is not None else (card.threshold if card is not None else 0.5))
    if not 0.0 < thr < 1.0:
        raise ConfigError(f"threshold must be in (0, 1), got {thr}")
    aoi_geom = load_aoi(opts.aoi, grid) if opts.aoi is not None else None
    names = list(card.bands) if card is not None else None
    radiometry = plan_radiometry(measure_date(before, bands=names), measure_date(after, bands=names), card,
                                 None if is_spectral else opts.radiometry)
    from cspon_rs.geo.pixels import pixel_size_m

    px = pixel_size_m(grid.crs, tuple(grid.transform)[:6], (grid.height, grid.width))
    floor = float(opts.min_area_m2) if opts.min_area_m2 is not None else min(200.0, default_mmu_m2(px))
    if is_spectral:
        spec = _spectral_spec(before, after, grid, aoi_geom, opts.batch_size)
        detector_id = SPECTRAL_DETECTOR_ID
    else:
        threads = opts.torch_threads
        if threads is None:
            # Local Dask worker processes start single-threaded: share the cores out among them.
            local_cluster = (opts.scheduler is None and opts.workers > 1) or opts.scheduler == LOCAL
            threads = torch_threads_per_worker(opts.workers) if local_cluster else 0
        device = check_device(opts.device, fallback_cpu=opts.fallback_cpu)
        backend = _pick_backend(opts, device, Path(checkpoint))
        spec = DetectorSpec(
            str(Path(checkpoint).resolve()), device=device, batch_size=opts.batch_size, torch_threads=threads,
            backend=backend, precision=opts.precision,
        )
        check_backend(spec)
        if spec.backend == "onnx":  # export (or find the cached export) here: a bad layer fails before any work
            from cspon_rs.models.onnx_export import export_onnx

            export_onnx(checkpoint, "int8" if spec.precision == "int8" else "fp32")
        choice = f"{choice}; " if choice else ""
        choice += f"backend {spec.backend}" + (" (auto)" if opts.backend == "auto" else "")
        detector_id = card.detector_id  # type: ignore[union-attr]
    return _Run(
        before=before, after=after, opts=opts, info=info, grid=grid, card=card, spec=spec, detector_id=detector_id,
        choice=choice, tile=tile, overlap=ovl, threshold=thr, aoi_geom=aoi_geom,
        scene_a=str(before.resolve()), scene_b=str(after.resolve()), sha_a=file_sha256(before),
        sha_b=file_sha256(after), sha_model=None if is_spectral else file_sha256(checkpoint),
        radiometry=radiometry, pixel_size_m=px, min_area_m2=floor,
    )


def _pick_backend(opts: DetectOptions, device: str, checkpoint: Path) -> str:
    """``auto``: ONNX Runtime for CPU runs when installed and the model exports, else PyTorch."""
    if opts.backend != "auto":
        return str(opts.backend)
    wants_gpu = device.startswith("cuda")
    if device == "auto":
        import torch

        wants_gpu = torch.cuda.is_available()
    if wants_gpu or opts.precision in ("fp16", "bf16"):
        return "torch"
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    from cspon_rs.errors import CheckpointError
    from cspon_rs.models.onnx_export import export_onnx

    try:
        export_onnx(checkpoint, "int8" if opts.precision == "int8" else "fp32")
    except (CheckpointError, OSError) as exc:
        warnings.warn(f"backend auto: ONNX export failed ({exc}); running PyTorch", InferenceWarning, stacklevel=3)
        return "torch"
    return "onnx"


def _plan_jobs(run: _Run) -> tuple[list[OwnedBlock], list[OwnedJob]]:
    """Blocks of the scene (each owning whole windows) and the jobs of those that touch the AOI."""
    grid = run.grid
    blocks = plan_owned_blocks(grid.height, grid.width, run.tile, run.overlap, run.opts.block_size)
    active = blocks
    if run.aoi_geom is not None:
        active = [b for b in blocks if run.aoi_geom.intersects(_block_box(b.region, grid))]
    ra = run.radiometry if run.radiometry is not None and run.radiometry.method != "none" else None
    jobs = [OwnedJob(b, run.scene_a, run.scene_b, run.tile, run.opts.blend, run.spec, ra) for b in active]
    return blocks, jobs


def _predict_to_rasters(
    run: _Run, blocks: list[OwnedBlock], jobs: list[OwnedJob], work: dict[str, Path], result: DetectionResult
) -> dict[str, float]:
    """Run the jobs (here or on Dask) and stream the blended probability and the mask into working GeoTIFFs."""
    opts, grid = run.opts, run.grid
    t0 = time.perf_counter()
    read_s = model_s = 0.0
    sink_kw: dict[str, Any] = {"width": grid.width, "height": grid.height, "crs": grid.crs,
                               "transform": grid.transform}
    blender = BlendAccumulator(blocks, [j.index for j in jobs])
    thr = np.float32(run.threshold)
    with RasterSink(work["prob"], "prob", **sink_kw) as prob_sink, \
            RasterSink(work["mask"], "mask", **sink_kw) as mask_sink, \
            _progress_bar(result.n_windows, opts.progress) as bar:
        use_dask = opts.scheduler is not None or opts.workers > 1
        with (dask_client(opts.workers, opts.scheduler) if use_dask else _null()) as client:
            done_px = done_windows = 0
            for res in iter_owned_results(jobs, client=client):
                for piece in blender.add(res):
                    valid = _valid_in_aoi(piece.valid, piece.window, grid, run.aoi_geom)
                    change = valid & (piece.prob >= thr)
                    prob_sink.write(piece.window, np.where(valid, piece.prob, np.float32(PROB_NODATA)))
                    mask_sink.write(piece.window, np.where(valid, change.astype(np.uint8), np.uint8(MASK_NODATA)))
                    result.valid_pixels += int(valid.sum())
                    result.changed_pixels += int(change.sum())
                    if valid.any():
                        top = float(piece.prob[valid].max())
                        result.max_prob = top if not result.max_prob >= top else result.max_prob
                    done_px += piece.window.size
                read_s += res.read_s
                model_s += res.model_s
                done_windows += len(run_block(jobs, res.index).block.origins)
                if bar is not None:
                    bar.update(len(run_block(jobs, res.index).block.origins))
                    bar.set_postfix_str(f"{done_px / 1e6 / (time.perf_counter() - t0):.2f} Mpx/s")
                if opts.on_progress is not None:
                    opts.on_progress(done_windows, result.n_windows)
    if blender.pending:
        raise RuntimeError(f"internal error: {blender.pending} block borders were never completed")
    return {"predict": time.perf_counter() - t0, "read": read_s, "model": model_s}


def run_block(jobs: list[OwnedJob], index: int) -> OwnedJob:
    """The job of block ``index`` (jobs are in block order)."""
    lo, hi = 0, len(jobs)
    while lo < hi:
        mid = (lo + hi) // 2
        if jobs[mid].index < index:
            lo = mid + 1
        else:
            hi = mid
    return jobs[lo]


def _write_cogs(work: dict[str, Path], temps: dict[str, Path]) -> dict[str, float]:
    """Working GeoTIFFs -> Cloud-Optimized GeoTIFFs under temporary names."""
    t0 = time.perf_counter()
    to_cog(work["prob"], temps["prob"], "prob")
    to_cog(work["mask"], temps["mask"], "mask")
    for path in work.values():
        path.unlink()
    return {"cog": time.perf_counter() - t0}


def _write_patches(run: _Run, temps: dict[str, Path], result: DetectionResult) -> dict[str, float]:
    """Mask -> change patches (with suppression cues) -> GeoPackage under a temporary name."""
    opts = run.opts
    t0 = time.perf_counter()
    attrs = PatchAttributes(t1=_iso(opts.t1, run.before), t2=_iso(opts.t2, run.after), detector=run.detector_id,
                            scene_before=run.scene_a, scene_after=run.scene_b, scene_before_sha256=run.sha_a,
                            scene_after_sha256=run.sha_b, model_sha256=run.sha_model)
    patches = vectorize_mask(temps["mask"], temps["prob"], attrs, min_area_m2=run.min_area_m2,
                             simplify_m=opts.simplify_m, block_size=max(opts.block_size, 256))
    t_sup = time.perf_counter()
    bands = list(run.card.bands) if run.card is not None else list(run.grid.band_descriptions)
    suppressed = apply_suppression(patches, opts.suppress, before=run.before, after=run.after, bands=bands,
                                   pixel_size_m=run.pixel_size_m)
    patches = suppressed.patches
    result.n_suppressed = suppressed.n_suppressed
    result.suppression = suppressed.summary() if opts.suppress is not None and opts.suppress.enabled else ""
    clf = resolve_classifier(opts.classifier, None if run.card is None else run.spec.checkpoint)
    classified = score_patches(patches, run.before, run.after, temps["prob"], bands, clf, opts.min_confidence)
    patches = classified.patches
    result.n_suppressed += classified.n_suppressed
    result.classifier = classified.summary()
    t_write = time.perf_counter()
    write_vector_atomic(patches, temps["patches"], layer=PATCH_LAYER, driver="GPKG", geometry_type="Polygon")
    result.n_patches = len(patches)
    result.changed_area_m2 = float(patches["area_m2"].sum()) if len(patches) else 0.0
    end = time.perf_counter()
    return {"vectorize": end - t0, "suppress": t_write - t_sup, "write_patches": end - t_write}



def zero_patch_reason(result: DetectionResult, threshold: float) -> str:
    """Why a run produced no patch, or no unsuppressed one, in one line ("" when it produced some)."""
    if result.valid_pixels == 0:
        return "0 patches: no valid pixel (both dates nodata, or outside the AOI)"
    if result.n_patches == 0:
        if result.changed_pixels == 0:
            return (f"0 patches: max change probability {result.max_prob:.2f} < threshold {threshold:.2f} "
                    "(nothing changed enough for this model)")
        return (f"0 patches: {result.changed_pixels} px above the threshold {threshold:.2f}, all in patches "
                f"smaller than {result.min_area_m2:g} m²")
    if result.n_suppressed >= result.n_patches:
        return f"0 warnings: all {result.n_patches} patches suppressed ({result.suppression})"
    return ""


def _block_box(block: PixelWindow, grid: GridInfo) -> Any:
    x0, y0 = grid.transform @ (block.col_off, block.row_off)
    x1, y1 = grid.transform @ (block.col_end, block.row_end)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _valid_in_aoi(valid: np.ndarray, window: PixelWindow, grid: GridInfo, aoi: Any | None) -> np.ndarray:
    if aoi is None:
        return valid
    wt = window_transform(window.to_rasterio(), grid.transform)
    inside = geometry_mask([aoi], out_shape=valid.shape, transform=wt, invert=True)
    out: np.ndarray = valid & inside
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
