"""Benchmark of county-scale inference (printed figures, not a test).

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
from collections.abc import Callable
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


def run_model_alone(checkpoint: str, n_windows: int) -> dict[str, Any]:
    """Mpx/s of the detector alone on random 256 px windows (batch 8)."""
    from cspon_rs.inference.predictors import DetectorSpec, get_predictor

    pred = get_predictor(DetectorSpec(checkpoint, device="auto", batch_size=8))
    rng = np.random.default_rng(0)
    a = rng.normal(1200, 300, (8, 4, 256, 256)).astype(np.float32)
    b = rng.normal(1200, 300, (8, 4, 256, 256)).astype(np.float32)
    v = np.ones((8, 256, 256), bool)
    pred(a[:2], b[:2], v[:2])  # warm-up
    t0 = time.perf_counter()
    done = 0
    while done < n_windows:
        pred(a, b, v)
        done += 8
    dt = time.perf_counter() - t0
    return {"mpx_s": done * 256 * 256 / 1e6 / dt, "s_per_window": dt / done}


def run_detect(before: str, after: str, out: str, checkpoint: str, workers: int, mode: str,
               block_size: int, min_area: float) -> dict[str, Any]:
    """``detect_pair`` in-process (mode 'inproc') or on a local Dask cluster started here (mode 'dask')."""
    from cspon_rs.inference.detect import detect_pair

    baseline = _import_baseline()
    worker_base: list[float] = []
    kw: dict[str, Any] = {"checkpoint": checkpoint, "block_size": block_size, "min_area_m2": min_area,
                          "progress": False, "device": "auto"}
    worker_rss: list[float] = []
    if mode == "dask":

        from distributed import Client

        from cspon_rs.inference.execute import start_local_cluster

        with start_local_cluster(workers) as cluster, Client(cluster) as client:
            worker_base = sorted(client.run(_import_baseline).values())
            t0 = time.perf_counter()
            threads = max(1, (os.cpu_count() or 1) // workers)  # what detect_pair does for its own local cluster
            res = detect_pair(before, after, out, scheduler=cluster.scheduler_address, torch_threads=threads, **kw)
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
        "model_s": res.timings["model"], "vectorize_s": res.timings["vectorize"], "cog_s": res.timings["cog"],
        "client_rss_mb": _peak_rss_mb(), "client_base_mb": baseline, "worker_rss_mb": worker_rss,
        "worker_base_mb": worker_base, "windows": res.n_windows,
        "unique_windows": res.unique_windows, "patches": res.n_patches,
    }


def run_naive(before: str, after: str, out: str, checkpoint: str) -> dict[str, Any]:
    """Read both scenes whole, predict non-overlapping tiles in one process, write the probability once."""
    from cspon_rs.geo.raster import aligned_pair, grid_info
    from cspon_rs.inference.detect import _spectral_spec
    from cspon_rs.inference.predictors import DetectorSpec, get_predictor

    baseline = _import_baseline()
    t0 = time.perf_counter()
    if checkpoint == "spectral":
        spec = _spectral_spec(Path(before), Path(after), grid_info(before), None, 8)
    else:
        spec = DetectorSpec(checkpoint, device="auto", batch_size=8)
    pred = get_predictor(spec)
    with aligned_pair(before, after) as (sa, sb):
        a = sa.read(out_dtype="float32")
        b = sb.read(out_dtype="float32")
        profile = sa.profile
    _, h, w = a.shape
    ts = 256
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


def run_seam(checkpoint: str, folder: str, size: int = 768) -> dict[str, Any]:
    """Blended vs naive tiling against a whole-image prediction on a ``size`` px scene (card tile size)."""
    from cspon_rs.inference.detect import detect_pair
    from cspon_rs.models.checkpoint import load_checkpoint, predict_proba

    before, after = make_scene_pair(Path(folder), size)
    loaded = load_checkpoint(checkpoint)
    tile = loaded.card.tile_size
    with rasterio.open(before) as a, rasterio.open(after) as b:
        whole = predict_proba(loaded, a.read().astype(np.float32), b.read().astype(np.float32))
    out: dict[str, Any] = {"size": size, "tile": tile}
    for name, ovl, blend in (("blended", tile // 4, "cosine"), ("naive", 0, "uniform")):
        res = detect_pair(before, after, Path(folder) / f"seam_{name}", checkpoint=checkpoint, tile_size=tile,
                          overlap=ovl, blend=blend, progress=False, device="auto", block_size=2 * tile)
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
    fn = {"model_alone": run_model_alone, "detect": run_detect, "naive": run_naive, "seam": run_seam}[what]
    print(json.dumps(fn(**args)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cspon_inference_bench"))
    parser.add_argument("--model-size", type=int, default=2048, help="scene edge (px) for the learned-model runs")
    parser.add_argument("--model-small", type=int, default=1536, help="second size for the worker-memory check")
    parser.add_argument("--model-block", type=int, default=1024, help="block size (px) of the model runs")
    parser.add_argument("--large-size", type=int, default=8000, help="scene edge (px) for the spectral runs")
    parser.add_argument("--large-small", type=int, default=4000, help="second size for the worker-memory check")
    parser.add_argument("--only-large", action="store_true", help="run only the large-scene (spectral) part")
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child:
        _child(json.loads(ns.child))
        return

    work: Path = ns.work
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    ckpt = str(compact_checkpoint(work))
    print("# cspon-rs inference benchmark")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")
    print(f"checkpoint: {ckpt}")
    print("window 256 px, overlap 64 px, cosine blending, float32 probability COG + uint8 mask COG + GeoPackage\n")

    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    # --- learned model -----------------------------------------------------------------------------
    if not ns.only_large:
        _model_part(ns, work, ckpt, say)
    _large_part(ns, work, say)
    load = os.getloadavg()
    say(f"\nload average at the end (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on "
        f"{os.cpu_count()} cores (shared machine: other jobs were running)")
    say(f"\ntotal benchmark time {math.ceil(time.perf_counter() - t_all)} s")


def _model_part(ns: argparse.Namespace, work: Path, ckpt: str, say: Callable[[str], None]) -> None:
    m = ns.model_size
    b, a = (str(p) for p in make_scene_pair(work, m))
    bs_small, as_small = (str(p) for p in make_scene_pair(work, ns.model_small))
    alone = _sub({"what": "model_alone", "checkpoint": ckpt, "n_windows": 48})
    say(f"## Learned model ({m} x {m} px, 4 bands = {m * m / 1e6:.1f} Mpx)")
    say(f"model alone (1 process, batch 8): {alone['mpx_s']:.3f} Mpx/s ({alone['s_per_window']:.2f} s per window)")
    runs: dict[str, dict[str, Any]] = {}
    block = ns.model_block
    for label, workers, mode in (("in-process (no Dask)", 1, "inproc"), ("Dask, 1 worker", 1, "dask"),
                                 ("Dask, 2 workers", 2, "dask")):
        r = _sub({"what": "detect", "before": b, "after": a, "out": str(work / f"m_{mode}{workers}"),
                  "checkpoint": ckpt, "workers": workers, "mode": mode, "block_size": block, "min_area": 200.0})
        runs[label] = r
        alone_s = r["unique_windows"] * alone["s_per_window"]  # the same windows, once each, whole machine
        busy = r["model_s"] / (r["wall_s"] * max(1, workers))
        say(f"{label:<22} end to end {r['mpx_s']:.3f} Mpx/s ({r['wall_s']:.0f} s; model {r['model_s']:.0f} s "
            f"summed over tasks = {100 * busy:.0f} % of the {'workers' if mode == 'dask' else 'process'}' time; "
            f"{r['windows']} windows for {r['unique_windows']} distinct; the model alone on the distinct windows "
            f"takes {alone_s:.0f} s = {100 * alone_s / r['wall_s']:.0f} % of end to end), {_client_mem(r)}, "
            f"{_worker_mem(r)}")
    speedup = runs["Dask, 2 workers"]["mpx_s"] / runs["Dask, 1 worker"]["mpx_s"]
    say(f"speed-up 1 -> 2 workers: x{speedup:.2f}")
    naive = _sub({"what": "naive", "before": b, "after": a, "out": str(work / "naive_model.tif"), "checkpoint": ckpt})
    say(f"naive (whole read, non-overlapping tiles, 1 process): {naive['mpx_s']:.3f} Mpx/s ({naive['wall_s']:.0f} s), "
        f"{_client_mem(naive)}")
    small = _sub({"what": "detect", "before": bs_small, "after": as_small, "out": str(work / "m_small"),
                  "checkpoint": ckpt, "workers": 2, "mode": "dask", "block_size": block, "min_area": 200.0})
    say(f"worker peak RSS, 2 workers, block {block} px: {ns.model_small} px scene "
        f"{_worker_mem(small)} vs {m} px scene {_worker_mem(runs['Dask, 2 workers'])}")
    seam = _sub({"what": "seam", "checkpoint": ckpt, "folder": str(work)})
    for name in ("blended", "naive"):
        q = seam[name]
        say(f"seam check, {name} (overlap {q['overlap']} px, {seam['size']} px scene, window {seam['tile']}): "
            f"|tiled - whole image| max {q['max']:.3f}, 99th pct {q['p99']:.4f}, mean {q['mean']:.5f}; step across "
            f"window edges / elsewhere {q['step_ratio']:.2f} (whole image at the same places "
            f"{q['whole_step_ratio']:.2f})")


def _large_part(ns: argparse.Namespace, work: Path, say: Callable[[str], None]) -> None:
    big, half = ns.large_size, ns.large_small
    say(f"\n## Large scenes, spectral CVA detector ({big} x {big} px = {big * big / 1e6:.0f} Mpx, 4 bands uint16)")
    rows = {}
    for size in (half, big):
        bb, aa = (str(p) for p in make_scene_pair(work, size))
        rows[size] = _sub({"what": "detect", "before": bb, "after": aa, "out": str(work / f"s_{size}"),
                           "checkpoint": "spectral", "workers": 2, "mode": "dask", "block_size": 2048,
                           "min_area": 2000.0})
        r = rows[size]
        say(f"{size} px, Dask 2 workers: {r['mpx_s']:.2f} Mpx/s end to end ({r['wall_s']:.0f} s: predict "
            f"{r['predict_s']:.0f} s, COG {r['cog_s']:.0f} s, vectorise {r['vectorize_s']:.0f} s; {r['patches']} "
            f"patches >= 2000 m²), {_client_mem(r)}, {_worker_mem(r)}")
    naive_big = _sub({"what": "naive", "before": str(work / f"before_{big}.tif"),
                      "after": str(work / f"after_{big}.tif"), "out": str(work / "naive_spectral.tif"),
                      "checkpoint": "spectral"})
    say(f"naive spectral at {big} px: {naive_big['mpx_s']:.2f} Mpx/s, {_client_mem(naive_big)} (grows with the scene)")


if __name__ == "__main__":
    main()
