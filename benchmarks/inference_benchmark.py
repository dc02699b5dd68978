"""Benchmark of county-scale inference (printed figures, not a test).

Quick check (about 3 min on 2 cores) and the figures as JSON::

    PYTHONPATH=. .venv/bin/python benchmarks/inference_benchmark.py --quick --json /tmp/inference.json

Full run (the lead's figures; about 15 min on 2 cores)::

    PYTHONPATH=. .venv/bin/python benchmarks/inference_benchmark.py --json benchmarks/inference_results.json \
        | tee benchmarks/inference_results.txt


Synthesises large 4-band scene pairs by mirroring the real Hong Kong demo pixels (Sentinel-2 B04,B03,B02,B08,
date 2 first warped onto date 1's grid) into tiled GeoTIFFs, then measures, each configuration in a fresh
subprocess so peak memory is its own:

* model alone: Mpx/s of the compact checkpoint on 256 px windows (one process);
* end to end (``detect_pair``): in-process, Dask local cluster with 1 and 2 workers -- Mpx/s, peak RSS of the
  client and of each worker (``resource.getrusage`` max RSS), speed-up 1 -> 2 workers;
* the naive alternative: read both scenes whole, predict non-overlapping tiles in one process, write once;
* peak worker memory at two scene sizes (flat) vs the naive run's (grows with the scene);
* the seam check: max |blended - whole-image prediction| on a small scene.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/inference_benchmark.py | tee benchmarks/inference_results.md

On a 2-core CPU the learned model needs about 0.1 s per 256 px window, so the model runs use a reduced
scene (``--model-size``) and the 8000 x 8000 px scenes are run with the spectral (CVA) detector, which has
the same I/O, blending, Dask and vectorisation path but a cheap per-window model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data_samples" / "hongkong"


# ---------------------------------------------------------------------------------------------- data
def make_scene_pair(folder: Path, size: int) -> tuple[Path, Path]:
    """Write a ``size`` x ``size`` px pair mirrored from the demo scenes (tiled 256, DEFLATE, EPSG:32650)."""
    from cspon_rs.geo.raster import aligned_pair

    before_path, after_path = folder / f"before_{size}.tif", folder / f"after_{size}.tif"
    if before_path.exists() and after_path.exists():
        return before_path, after_path
    with aligned_pair(DEMO / "before_20160927.tif", DEMO / "after_20180323.tif") as (a, b):
        src = [a.read(), b.read()]
    _, h, w = src[0].shape
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": size, "height": size, "count": 4, "dtype": "uint16",
        "crs": "EPSG:32650", "transform": from_origin(200000.0, 2500000.0, 10.0, 10.0), "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate", "BIGTIFF": "IF_SAFER",
    }
    step = 1024
    for data, path in zip(src, (before_path, after_path), strict=True):
        tmp = path.with_suffix(".partial.tif")
        with rasterio.open(tmp, "w", **profile) as dst:
            for r0 in range(0, size, step):
                rows = np.arange(r0, min(r0 + step, size)) % (2 * h)
                rows = np.where(rows < h, rows, 2 * h - 1 - rows)
                for c0 in range(0, size, step):
                    cols = np.arange(c0, min(c0 + step, size)) % (2 * w)
                    cols = np.where(cols < w, cols, 2 * w - 1 - cols)
                    block = data[:, rows][:, :, cols]
                    dst.write(block, window=rasterio.windows.Window(c0, r0, len(cols), len(rows)))
        os.replace(tmp, path)
    return before_path, after_path


def compact_checkpoint(folder: Path) -> Path:
    """The shipped checkpoint when present, else an untrained compact model (speed figures only)."""
    from cspon_rs.models.checkpoint import default_checkpoint

    shipped = default_checkpoint()
    if shipped.is_file():
        return shipped
    path = folder / "compact_untrained.safetensors"
    if path.exists():
        return path
    import torch

    from cspon_rs.models.card import ModelCard, Normalization
    from cspon_rs.models.checkpoint import save_checkpoint
    from cspon_rs.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("siam_unet_lite", in_channels=4).eval()
    card = ModelCard(
        name="bench-untrained", version="0", architecture="siam_unet_lite", bands=["B04", "B03", "B02", "B08"],
        normalization=Normalization(mean=[1200.0, 1100.0, 1000.0, 2000.0], std=[400.0, 400.0, 400.0, 800.0]),
        tile_size=256,
    )
    # Untrained logits barely vary; rescale the head (logit std 3, median 0) so probabilities spread over
    # [0, 1] and the seam check measures something.
    before, after = make_scene_pair(folder, 512)
    with rasterio.open(before) as a, rasterio.open(after) as b:
        x = card.normalize(a.read(window=rasterio.windows.Window(0, 0, 256, 256)))
        y = card.normalize(b.read(window=rasterio.windows.Window(0, 0, 256, 256)))
    with torch.no_grad():
        logits = model(torch.from_numpy(x)[None], torch.from_numpy(y)[None]).numpy()
        scale = 3.0 / float(logits.std())
        model.head.weight.mul_(scale)  # type: ignore[operator]
        model.head.bias.sub_(float(np.median(logits))).mul_(scale)  # type: ignore[operator]
    weights, _ = save_checkpoint(model, card, path)
    return weights


# ---------------------------------------------------------------------------------------- measurements
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_now_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def _import_baseline() -> float:
    """RSS (MB) of a process after importing what inference needs (torch, GDAL, geopandas, cspon_rs)."""
    import torch  # noqa: F401

    import cspon_rs.inference.blocks
    import cspon_rs.inference.detect
    import cspon_rs.models.checkpoint  # noqa: F401

    return _rss_now_mb()


def run_model_alone(checkpoint: str, tile: int, n_windows: int, backend: str, batch: int) -> dict[str, Any]:
    """Mpx/s of the detector alone on random ``tile`` px windows (one process, every core), warm."""
    from cspon_rs.inference.predictors import DetectorSpec, get_predictor

    pred = get_predictor(DetectorSpec(checkpoint, device="cpu", batch_size=batch, backend=backend))
    rng = np.random.default_rng(0)
    a = rng.normal(1200, 300, (batch, 4, tile, tile)).astype(np.float32)
    b = rng.normal(1200, 300, (batch, 4, tile, tile)).astype(np.float32)
    v = np.ones((batch, tile, tile), bool)
    pred(a[:1], b[:1], v[:1])  # warm-up (and ONNX export / session set-up)
    t0 = time.perf_counter()
    done = 0
    while done < n_windows:
        pred(a, b, v)
        done += batch
    dt = time.perf_counter() - t0
    return {"mpx_s": done * tile * tile / 1e6 / dt, "s_per_window": dt / done, "tile": tile}


def run_detect(before: str, after: str, out: str, checkpoint: str, workers: int, threads: int, mode: str,
               min_area: float, backend: str = "torch", tile_size: int | None = None, overlap: int | None = None,
               block_size: int = 2048) -> dict[str, Any]:
    """``detect_pair`` in-process (mode 'inproc') or on a local Dask cluster of ``workers`` x ``threads``."""
    from cspon_rs.inference.detect import detect_pair

    baseline = _import_baseline()
    worker_base: list[float] = []
    kw: dict[str, Any] = {"checkpoint": checkpoint, "min_area_m2": min_area, "progress": False, "device": "cpu",
                          "backend": backend, "tile_size": tile_size, "overlap": overlap, "block_size": block_size}
    worker_rss: list[float] = []
    if mode == "dask":
        import dask
        from distributed import Client, LocalCluster

        env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
        env.pop("MALLOC_TRIM_THRESHOLD_", None)
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}), \
                LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=None,
                             silence_logs=40) as cluster, Client(cluster) as client:
            worker_base = sorted(client.run(_import_baseline).values())
            t0 = time.perf_counter()
            # each task's model uses its share of the cores: cores / (workers x threads)
            share = max(1, (os.cpu_count() or 1) // (workers * threads))
            res = detect_pair(before, after, out, scheduler=cluster.scheduler_address, torch_threads=share, **kw)
            wall = time.perf_counter() - t0
            rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
            worker_rss = sorted(rss.values())
    else:
        t0 = time.perf_counter()
        res = detect_pair(before, after, out, **kw)
        wall = time.perf_counter() - t0
    px = res.width * res.height
    return {
        "mpx_s": px / 1e6 / wall, "wall_s": wall, "predict_s": res.timings["predict"],
        "model_s": res.timings["model"], "read_s": res.timings["read"], "vectorize_s": res.timings["vectorize"],
        "cog_s": res.timings["cog"], "client_rss_mb": _peak_rss_mb(), "client_base_mb": baseline,
        "worker_rss_mb": worker_rss, "worker_base_mb": worker_base, "windows": res.n_windows,
        "unique_windows": res.unique_windows, "patches": res.n_patches, "pixels": px,
    }


def run_naive(before: str, after: str, out: str, checkpoint: str, tile: int = 256) -> dict[str, Any]:
    """Read both scenes whole, predict non-overlapping tiles in one process, write the probability once."""
    from cspon_rs.geo.raster import aligned_pair, grid_info
    from cspon_rs.inference.detect import _spectral_spec
    from cspon_rs.inference.predictors import DetectorSpec, get_predictor

    baseline = _import_baseline()
    t0 = time.perf_counter()
    if checkpoint == "spectral":
        spec = _spectral_spec(Path(before), Path(after), grid_info(before), None, 8)
    else:
        spec = DetectorSpec(checkpoint, device="cpu", batch_size=8)
    pred = get_predictor(spec)
    with aligned_pair(before, after) as (sa, sb):
        a = sa.read(out_dtype="float32")
        b = sb.read(out_dtype="float32")
        profile = sa.profile
    _, h, w = a.shape
    ts = tile
    prob = np.zeros((h, w), np.float32)
    tiles = [(r, c) for r in range(0, h, ts) for c in range(0, w, ts)]
    for i in range(0, len(tiles), 8):
        chunk = tiles[i : i + 8]
        ba = np.zeros((len(chunk), a.shape[0], ts, ts), np.float32)
        bb = np.zeros_like(ba)
        for k, (r, c) in enumerate(chunk):
            ph, pw = min(ts, h - r), min(ts, w - c)
            ba[k, :, :ph, :pw] = a[:, r : r + ph, c : c + pw]
            bb[k, :, :ph, :pw] = b[:, r : r + ph, c : c + pw]
        p = pred(ba, bb, np.ones((len(chunk), ts, ts), bool))
        for k, (r, c) in enumerate(chunk):
            ph, pw = min(ts, h - r), min(ts, w - c)
            prob[r : r + ph, c : c + pw] = p[k, :ph, :pw]
    profile.update(count=1, dtype="float32", nodata=None, compress="deflate")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(prob, 1)
    wall = time.perf_counter() - t0
    return {"mpx_s": h * w / 1e6 / wall, "wall_s": wall, "client_rss_mb": _peak_rss_mb(), "client_base_mb": baseline}


def run_vectorize(folder: str, size: int, n_target: int) -> dict[str, Any]:
    """Vectorise a synthetic ``size`` px mask holding about ``n_target`` separate patches (seeded)."""
    from cspon_rs.inference.outputs import RasterSink
    from cspon_rs.inference.vectorize import PatchAttributes, vectorize_mask
    from cspon_rs.inference.windows import PixelWindow

    stem = f"{size}_{n_target}_v2"  # v2: notched patches stay one patch (v1 split them in two)
    mask_path, prob_path = Path(folder) / f"vmask_{stem}.tif", Path(folder) / f"vprob_{stem}.tif"
    rng = np.random.default_rng(0)
    cell = max(8, int(size / math.sqrt(n_target)))
    n = size // cell
    if not mask_path.exists():
        kw: dict[str, Any] = {"width": size, "height": size, "crs": "EPSG:32650",
                              "transform": from_origin(200000.0, 2500000.0, 10.0, 10.0)}
        with RasterSink(mask_path, "mask", **kw) as ms, RasterSink(prob_path, "prob", **kw) as ps:
            for r0 in range(0, size, 1024):
                h = min(1024, size - r0)
                mask = np.zeros((h, size), np.uint8)
                prob = rng.random((h, size), dtype=np.float32) * 0.4
                for i in range(r0 // cell, min(n, (r0 + h) // cell)):
                    for j in range(n):
                        ph, pw = rng.integers(2, cell - 2, 2)
                        rr, cc = i * cell - r0 + 1, j * cell + 1
                        mask[rr : rr + ph, cc : cc + pw] = 1
                        mask[rr + ph // 2, cc : cc + pw - 1] = 0 if ph > 4 else 1  # a notch (still one patch)
                prob[mask == 1] += 0.5
                ms.write(PixelWindow(r0, 0, h, size), mask)
                ps.write(PixelWindow(r0, 0, h, size), prob)
    attrs = PatchAttributes("2020-01-01", "2021-01-01", "b.tif", "a.tif", "bench")
    t0 = time.perf_counter()
    gdf = vectorize_mask(mask_path, prob_path, attrs, min_area_m2=0.0, simplify_m=1.0, block_size=2048)
    return {"seconds": time.perf_counter() - t0, "patches": len(gdf), "size": size}


def _window_edges(length: int, tile: int, overlap: int) -> list[int]:
    """Pixel offsets x where a window starts or ends inside ``(0, length)`` (a seam would sit between x-1 and x)."""
    from cspon_rs.inference.windows import window_starts

    starts = window_starts(length, tile, overlap)
    return sorted({o for o in starts if o > 0} | {o + tile for o in starts if o + tile < length})


def seam_step_ratio(prob: np.ndarray, edges: list[int]) -> float:
    """Mean |step| between neighbouring pixels across window edges / mean |step| everywhere else.

    A probability map without seams gives about 1 (window edges are ordinary pixels); a seam, a jump at
    the edges, gives more. Rows and columns are pooled (the tiling is the same along both axes).
    """
    d_cols = np.abs(np.diff(prob, axis=1))  # d_cols[:, x - 1] = |p[:, x] - p[:, x - 1]|
    d_rows = np.abs(np.diff(prob, axis=0))
    at = np.zeros(prob.shape[1] - 1, bool)
    at[[e - 1 for e in edges]] = True
    border = np.concatenate([d_cols[:, at].ravel(), d_rows[at, :].ravel()])
    other = np.concatenate([d_cols[:, ~at].ravel(), d_rows[~at, :].ravel()])
    return float(border.mean() / max(other.mean(), 1e-9))


def run_seam(checkpoint: str, folder: str, size: int = 768, tile: int = 256, overlap: int = 32) -> dict[str, Any]:
    """Blended (small margin) vs naive tiling against a whole-image prediction on a ``size`` px scene."""
    from cspon_rs.inference.detect import detect_pair
    from cspon_rs.models.checkpoint import load_checkpoint, predict_proba

    before, after = make_scene_pair(Path(folder), size)
    loaded = load_checkpoint(checkpoint)
    with rasterio.open(before) as a, rasterio.open(after) as b:
        whole = predict_proba(loaded, a.read().astype(np.float32), b.read().astype(np.float32))
    out: dict[str, Any] = {"size": size, "tile": tile}
    for name, ovl, blend in (("blended", overlap, "cosine"), ("naive", 0, "uniform")):
        res = detect_pair(before, after, Path(folder) / f"seam_{name}", checkpoint=checkpoint, tile_size=tile,
                          overlap=ovl, blend=blend, progress=False, device="cpu", block_size=2 * tile)
        with rasterio.open(res.prob_path) as src:
            prob = src.read(1)
        diff = np.abs(prob - whole)
        edges = _window_edges(size, tile, ovl)
        out[name] = {"max": float(diff.max()), "mean": float(diff.mean()), "p99": float(np.quantile(diff, 0.99)),
                     "step_ratio": seam_step_ratio(prob, edges), "whole_step_ratio": seam_step_ratio(whole, edges),
                     "overlap": ovl}
    return out


# ------------------------------------------------------------------------------------------ driver
def _client_mem(r: dict[str, Any]) -> str:
    return f"client peak RSS {r['client_rss_mb']:.0f} MB (+{r['client_rss_mb'] - r['client_base_mb']:.0f} over imports)"


def _worker_mem(r: dict[str, Any]) -> str:
    if not r.get("worker_rss_mb"):
        return "no workers"
    peaks = [round(x) for x in r["worker_rss_mb"]]
    extra = [round(p - b) for p, b in zip(r["worker_rss_mb"], r["worker_base_mb"], strict=False)]
    return f"worker peak RSS {peaks} MB (+{extra} over imports)"


def _sub(args: dict[str, Any]) -> dict[str, Any]:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)], capture_output=True, text=True,
                          env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{args['what']} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _child(args: dict[str, Any]) -> None:
    what = args.pop("what")
    fn = {"model_alone": run_model_alone, "detect": run_detect, "naive": run_naive, "seam": run_seam,
          "vectorize": run_vectorize}[what]
    print(json.dumps(fn(**args)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cspon_inference_bench"))
    parser.add_argument("--quick", action="store_true", help="smaller scenes, fewer runs (about 3 min on 2 cores)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    parser.add_argument("--model-size", type=int, default=None, help="scene edge (px) of the model runs "
                        "(default 2048; 1536 with --quick)")
    parser.add_argument("--model-large", type=int, default=3072, help="second size for the worker-memory check")
    parser.add_argument("--vector-size", type=int, default=8000, help="mask edge (px) of the vectorise run")
    parser.add_argument("--vector-patches", type=int, default=45000, help="patches in the vectorise run")
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child:
        _child(json.loads(ns.child))
        return
    work: Path = ns.work
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    ckpt = str(compact_checkpoint(work))
    m = ns.model_size or (1536 if ns.quick else 2048)
    from cspon_rs.inference.detect import default_tiling

    tile, ovl = default_tiling(m, m, None, None)
    figures: dict[str, Any] = {"quick": ns.quick, "cores": os.cpu_count(), "checkpoint": ckpt, "scene_px": m,
                               "tile": tile, "overlap": ovl}

    def say(text: str) -> None:
        print(text, flush=True)

    say("# cspon-rs inference benchmark" + (" (--quick)" if ns.quick else ""))
    say(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"load average at start {os.getloadavg()[0]:.1f}")
    say(f"checkpoint: {ckpt}")
    say(f"default windows {tile} px, overlap {ovl} px (cosine blend), each window predicted once; scene {m} x {m} "
        f"px, 4 bands\n")

    n_win = 2 if ns.quick else 6
    torch_alone = _sub({"what": "model_alone", "checkpoint": ckpt, "tile": tile, "n_windows": n_win,
                        "backend": "torch", "batch": 1})
    onnx_alone = _sub({"what": "model_alone", "checkpoint": ckpt, "tile": tile, "n_windows": n_win,
                       "backend": "onnx", "batch": 1})
    figures |= {"torch_model_alone_mpx_s": torch_alone["mpx_s"], "onnx_model_alone_mpx_s": onnx_alone["mpx_s"],
                # The default backend on this machine is ONNX Runtime (--backend auto): its model-alone figure is
                # the one end to end is held against.
                "model_alone_mpx_s": onnx_alone["mpx_s"]}
    say(f"model alone, {tile} px windows, 1 process: PyTorch {torch_alone['mpx_s']:.3f} Mpx/s, ONNX Runtime "
        f"{onnx_alone['mpx_s']:.3f} Mpx/s (x{onnx_alone['mpx_s'] / torch_alone['mpx_s']:.2f}; target >= x2)")

    b, a = (str(p) for p in make_scene_pair(work, m))
    naive = _sub({"what": "naive", "before": b, "after": a, "out": str(work / "naive_model.tif"), "checkpoint": ckpt})
    figures["naive_mpx_s"] = naive["mpx_s"]
    say(f"naive script (whole read, non-overlapping 256 px tiles, PyTorch, 1 process): {naive['mpx_s']:.3f} Mpx/s "
        f"({naive['wall_s']:.0f} s), {_client_mem(naive)}")

    configs = [*([] if ns.quick else [("in-process, torch", "torch", 1, 1, "inproc")]),
               ("in-process, onnx", "onnx", 1, 1, "inproc"),
               ("Dask 1 worker x 2 threads, onnx", "onnx", 1, 2, "dask"),
               ("Dask 2 workers x 1 thread, onnx", "onnx", 2, 1, "dask")]
    e2e: dict[str, dict[str, Any]] = {}
    for label, backend, workers, threads, mode in configs:
        r = _sub({"what": "detect", "before": b, "after": a, "out": str(work / f"e2e_{backend}_{workers}x{threads}"),
                  "checkpoint": ckpt, "workers": workers, "threads": threads, "mode": mode, "min_area": 200.0,
                  "backend": backend})
        alone = onnx_alone if backend == "onnx" else torch_alone
        r["of_model_alone"] = r["mpx_s"] / alone["mpx_s"]
        r["vs_naive"] = r["mpx_s"] / naive["mpx_s"]
        e2e[label] = r
        say(f"{label:<32} end to end {r['mpx_s']:.3f} Mpx/s ({r['wall_s']:.1f} s: predict {r['predict_s']:.1f}, "
            f"model {r['model_s']:.1f} summed, read {r['read_s']:.1f}, COG {r['cog_s']:.1f}, vectorise "
            f"{r['vectorize_s']:.1f}); {r['windows']} windows = {r['unique_windows']} distinct; "
            f"{100 * r['of_model_alone']:.0f} % of the {backend} model alone on the scene's pixels; "
            f"x{r['vs_naive']:.2f} the naive script; {_client_mem(r)}, {_worker_mem(r)}")
    best_label = max(e2e, key=lambda k: e2e[k]["mpx_s"])
    best = e2e[best_label]
    figures |= {"e2e_mpx_s": best["mpx_s"], "e2e_config": best_label,
                "e2e_torch_mpx_s": e2e["in-process, torch"]["mpx_s"] if "in-process, torch" in e2e else None,
                "e2e_onnx_mpx_s": e2e["in-process, onnx"]["mpx_s"],
                "e2e_of_model_alone": best["of_model_alone"], "e2e_vs_naive": best["vs_naive"],
                "dask_1x2_mpx_s": e2e["Dask 1 worker x 2 threads, onnx"]["mpx_s"],
                "dask_2x1_mpx_s": e2e["Dask 2 workers x 1 thread, onnx"]["mpx_s"],
                "runs": e2e}
    say(f"best default configuration: {best_label}: {best['mpx_s']:.3f} Mpx/s = x{best['vs_naive']:.2f} the naive "
        f"script (target >= x1.5), {100 * best['of_model_alone']:.0f} % of its model alone on distinct pixels "
        f"(target >= 90 %)")

    vec = _sub({"what": "vectorize", "folder": str(work), "size": ns.vector_size, "n_target": ns.vector_patches})
    figures |= {"vectorize_s": vec["seconds"], "vectorize_patches": vec["patches"]}
    say(f"vectorise {vec['patches']} patches ({vec['size']} x {vec['size']} px mask): {vec['seconds']:.1f} s "
        f"(target <= 10 s for 45k)")

    seam = _sub({"what": "seam", "checkpoint": ckpt, "folder": str(work), "overlap": ovl})
    figures["seam"] = seam
    for name in ("blended", "naive"):
        q = seam[name]
        say(f"seam check, {name} (overlap {q['overlap']} px, {seam['size']} px scene, window {seam['tile']}): "
            f"|tiled - whole image| max {q['max']:.3f}, 99th pct {q['p99']:.4f}, mean {q['mean']:.5f}; step across "
            f"window edges / elsewhere {q['step_ratio']:.2f} (whole image at the same places "
            f"{q['whole_step_ratio']:.2f}, so tiling adds x{q['step_ratio'] / q['whole_step_ratio']:.3f}; "
            f"target <= 1.05)")

    if not ns.quick:
        # Flat worker memory: the same 1024 px blocks over two scene sizes (2.25 x the pixels) on 2 workers.
        peaks: dict[str, list[float]] = {}
        for size in (m, ns.model_large):
            bs, as_ = (str(p) for p in make_scene_pair(work, size))
            run = _sub({"what": "detect", "before": bs, "after": as_, "out": str(work / f"mem_{size}"),
                        "checkpoint": ckpt, "workers": 2, "threads": 1, "mode": "dask", "min_area": 200.0,
                        "backend": "onnx", "block_size": 1024})
            peaks[str(size)] = run["worker_rss_mb"]
            say(f"worker peak RSS, Dask 2 x 1, 1024 px blocks, {size} px scene: {_worker_mem(run)} "
                f"({run['mpx_s']:.3f} Mpx/s)")
        figures["worker_rss_mb"] = peaks

    load = os.getloadavg()
    figures["load_end"] = load
    figures["total_s"] = time.perf_counter() - t_all
    say(f"\nload average at the end (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on "
        f"{os.cpu_count()} cores (shared machine: other jobs were running)")
    say(f"total benchmark time {math.ceil(time.perf_counter() - t_all)} s")
    if ns.json:
        ns.json.write_text(json.dumps(figures, indent=2, default=float))


if __name__ == "__main__":
    main()
