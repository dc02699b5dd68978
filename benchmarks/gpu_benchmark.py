"""GPU benchmark of county-scale inference (bounded: about 5 min on one GPU; printed figures, not a test).

Synthesises a before/after pair (default 20,000 x 20,000 px, 4 bands uint16, tiled GeoTIFF, seeded; written
once under ``--work``), then measures on the GPU:

* model alone: Mpx/s of the shipped checkpoint on ``--tile`` px windows in batches (AMP bf16 or fp16,
  pinned host memory), and the GPU utilisation sampled with NVML (``nvidia-smi``) while it runs;
* end to end: ``detect_pair`` on the whole pair (``--device cuda``), Mpx/s and stage times;
* the extrapolated time for a county of ``--county-km2`` (2,000 km²) at ``--gsd-m`` (1 m) from the end-to-end rate.

The measurements keep to ``--budget-s`` (default 240 s): the end-to-end pair is cut to a smaller square when
the model-alone rate says the whole 20,000 px scene would not fit (the extrapolation uses the measured rate).

Usage (a GPU machine)::

    PYTHONPATH=. .venv/bin/python benchmarks/gpu_benchmark.py --json /tmp/gpu.json

On a CPU-only machine, to check the script itself (tiny scene, CPU, seconds)::

    PYTHONPATH=. .venv/bin/python benchmarks/gpu_benchmark.py --size 1024 --device cpu --tile 256
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window


def make_pair(folder: Path, size: int) -> tuple[Path, Path]:
    """A seeded ``size`` px 4-band uint16 pair (smooth terrain + noise + bright new roofs in date 2)."""
    before, after = folder / f"gpu_before_{size}.tif", folder / f"gpu_after_{size}.tif"
    if before.exists() and after.exists():
        return before, after
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": size, "height": size, "count": 4, "dtype": "uint16", "crs": "EPSG:32650",
        "transform": from_origin(200000.0, 2500000.0, 1.0, 1.0), "tiled": True, "blockxsize": 512,
        "blockysize": 512, "compress": "deflate", "BIGTIFF": "YES",
    }
    rng = np.random.default_rng(0)
    step = 2048
    with rasterio.open(before, "w", **profile) as da, rasterio.open(after, "w", **profile) as db:
        da.descriptions = db.descriptions = ("B04", "B03", "B02", "B08")
        for r0 in range(0, size, step):
            for c0 in range(0, size, step):
                h, w = min(step, size - r0), min(step, size - c0)
                yy = np.arange(r0, r0 + h, dtype=np.float32)[:, None]
                xx = np.arange(c0, c0 + w, dtype=np.float32)[None, :]
                base = 900 + 300 * np.sin(xx / 230.0) * np.cos(yy / 310.0)
                noise = rng.integers(-60, 60, (2, h, w), dtype=np.int16).astype(np.float32)
                a = np.stack([base * f for f in (1.0, 1.1, 1.2, 2.2)]) + noise[0]
                b = a + noise[1]
                for _ in range(20):
                    rr, cc = rng.integers(0, max(1, h - 40)), rng.integers(0, max(1, w - 40))
                    b[:, rr : rr + 30, cc : cc + 30] = np.array([2600, 2500, 2400, 2700])[:, None, None]
                win = Window(c0, r0, w, h)
                da.write(np.clip(a, 1, 10000).astype(np.uint16), window=win)
                db.write(np.clip(b, 1, 10000).astype(np.uint16), window=win)
    return before, after


class GpuSampler:
    """Samples GPU utilisation (%) with ``nvidia-smi`` every 0.5 s in a background thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.available = shutil.which("nvidia-smi") is not None

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, check=False)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.strip().splitlines()[0]))
            self._stop.wait(0.5)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def mean(self) -> float | None:
        """Mean utilisation (%), None without samples."""
        return float(np.mean(self.samples)) if self.samples else None


def model_alone(checkpoint: str, device: str, tile: int, batch: int, precision: str, seconds: float) -> dict[str, Any]:
    """Mpx/s of the model alone on random windows for about ``seconds``, with GPU utilisation."""
    from cspon_rs.inference.predictors import DetectorSpec, get_predictor

    pred = get_predictor(DetectorSpec(checkpoint, device=device, batch_size=batch, precision=precision))
    rng = np.random.default_rng(0)
    a = rng.normal(1200, 300, (batch, 4, tile, tile)).astype(np.float32)
    b = rng.normal(1200, 300, (batch, 4, tile, tile)).astype(np.float32)
    v = np.ones((batch, tile, tile), bool)
    pred(a, b, v)  # warm-up (cuDNN autotuning, allocator)
    done = 0
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds or done == 0:
            pred(a, b, v)
            done += batch
        dt = time.perf_counter() - t0
    return {"mpx_s": done * tile * tile / 1e6 / dt, "windows": done, "gpu_util_pct": gpu.mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cspon_gpu_bench"))
    parser.add_argument("--size", type=int, default=20000, help="scene edge, px (default 20,000)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (to check the script)")
    parser.add_argument("--fallback-cpu", action="store_true", help="run on the CPU when no GPU is found")
    parser.add_argument("--tile", type=int, default=1024, help="window edge, px")
    parser.add_argument("--batch", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--precision", default="auto", help="auto (fp16) | bf16 | fp16 | fp32")
    parser.add_argument("--checkpoint", default="default", help="checkpoint (default: the shipped S2 model)")
    parser.add_argument("--budget-s", type=float, default=240.0, help="time budget of the measurements, s")
    parser.add_argument("--county-km2", type=float, default=2000.0)
    parser.add_argument("--gsd-m", type=float, default=1.0)
    parser.add_argument("--json", type=Path, default=None)
    ns = parser.parse_args()

    from cspon_rs.inference.detect import detect_pair
    from cspon_rs.inference.predictors import check_device
    from cspon_rs.models.checkpoint import default_checkpoint, resolve_checkpoint

    device = check_device(ns.device, fallback_cpu=ns.fallback_cpu)  # one-line error when no GPU
    ckpt = str(default_checkpoint() if ns.checkpoint == "default" else resolve_checkpoint(ns.checkpoint))
    ns.work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    print(f"# cspon-rs GPU benchmark: synthetic {ns.size} x {ns.size} px pair, device {device}, windows {ns.tile} px, "
          f"batch {ns.batch}, precision {ns.precision}")
    if device.startswith("cuda"):
        import torch

        print(f"GPU: {torch.cuda.get_device_name(0)}")
    alone = model_alone(ckpt, device, ns.tile, ns.batch, ns.precision, seconds=min(30.0, ns.budget_s / 8))
    util = f"{alone['gpu_util_pct']:.0f} %" if alone["gpu_util_pct"] is not None else "n/a (no nvidia-smi)"
    print(f"model alone: {alone['mpx_s']:.1f} Mpx/s ({alone['windows']} windows), GPU utilisation {util}")

    # End to end on as much of the scene as fits the remaining budget (model time x 2 for I/O and outputs).
    left = ns.budget_s - (time.perf_counter() - t_all)
    fit_px = left / 2.0 * alone["mpx_s"] * 1e6
    edge = max(256, min(ns.size, int(math.sqrt(max(fit_px, 1.0)) // 256 * 256)))
    t_gen = time.perf_counter()
    run_before, run_after = make_pair(ns.work, edge)
    print(f"pair of {edge} x {edge} px written in {time.perf_counter() - t_gen:.0f} s"
          + ("" if edge == ns.size else f" (all {ns.size} px would not fit the {ns.budget_s:.0f} s budget)"))
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        res = detect_pair(run_before, run_after, ns.work / "out", checkpoint=ckpt, device=device, tile_size=ns.tile,
                          batch_size=ns.batch, precision=ns.precision, progress=False, min_area_m2=200.0)
        wall = time.perf_counter() - t0
    px = res.width * res.height
    e2e = px / 1e6 / wall
    county_px = ns.county_km2 * 1e6 / (ns.gsd_m**2)
    hours = county_px / (e2e * 1e6) / 3600
    util_e2e = f"{gpu.mean:.0f} %" if gpu.mean is not None else "n/a"
    print(f"end to end: {edge} x {edge} px in {wall:.0f} s = {e2e:.1f} Mpx/s (predict {res.timings['predict']:.0f} s, "
          f"COG {res.timings['cog']:.0f} s, vectorise {res.timings['vectorize']:.0f} s, {res.n_patches} patches), "
          f"GPU utilisation {util_e2e}")
    print(f"extrapolated: a {ns.county_km2:,.0f} km² county at {ns.gsd_m:g} m = {county_px / 1e9:.1f} Gpx per date "
          f"-> {hours:.2f} h end to end on this device ({hours * 60:.0f} min)")
    print(f"total {time.perf_counter() - t_all:.0f} s")
    figures = {"device": device, "size": ns.size, "e2e_edge": edge, "tile": ns.tile, "batch": ns.batch,
               "precision": ns.precision, "model_alone_mpx_s": alone["mpx_s"],
               "gpu_util_model_pct": alone["gpu_util_pct"],
               "e2e_mpx_s": e2e, "gpu_util_e2e_pct": gpu.mean, "timings": res.timings, "county_hours": hours,
               "cpu_count": os.cpu_count()}
    if ns.json:
        ns.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
