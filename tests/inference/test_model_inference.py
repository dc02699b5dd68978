"""Tiled inference with a real checkpoint: seams, outputs, and a real two-process Dask cluster."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

from cspon_rs.inference.detect import detect_pair
from cspon_rs.inference.suppress import SUPPRESS_COLUMNS
from cspon_rs.inference.vectorize import PATCH_COLUMNS, PATCH_LAYER


@pytest.fixture(scope="module")
def single_run(scene_pair, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return detect_pair(
        scene_pair.before, scene_pair.after, tmp_path_factory.mktemp("single"), checkpoint=tiny_checkpoint,
        tile_size=128, overlap=32, block_size=192, min_area_m2=0.0, progress=False, device="cpu",
    )


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_blended_tiles_match_whole_image_prediction(scene_pair, tiny_checkpoint: Path, single_run) -> None:  # type: ignore[no-untyped-def]
    from cspon_rs.models.checkpoint import load_checkpoint, predict_proba

    loaded = load_checkpoint(tiny_checkpoint)
    with rasterio.open(scene_pair.before) as a, rasterio.open(scene_pair.after) as b:
        whole = predict_proba(loaded, a.read().astype(np.float32), b.read().astype(np.float32))
    blended = _read(single_run.prob_path)
    # The whole-image pass pads the scene's bottom/right edge; compare away from the scene border,
    # where only tile seams can make a difference.
    diff = np.abs(blended - whole)[16:-16, 16:-16]
    assert diff.mean() < 2e-3
    assert diff.max() < 0.05

    naive_dir = single_run.prob_path.parent.parent / "naive"
    naive = detect_pair(scene_pair.before, scene_pair.after, naive_dir, checkpoint=tiny_checkpoint, tile_size=128,
                        overlap=0,
                        blend="uniform", min_area_m2=0.0, progress=False, device="cpu")
    naive_diff = np.abs(_read(naive.prob_path) - whole)[16:-16, 16:-16]
    assert naive_diff.max() > 5 * diff.max(), "overlap + cosine blending should remove the tile seams"


def test_outputs_are_cogs_on_the_before_grid(scene_pair, single_run) -> None:  # type: ignore[no-untyped-def]
    with rasterio.open(scene_pair.before) as ref:
        crs, transform, shape = ref.crs, ref.transform, (ref.height, ref.width)
    for path, dtype, nodata in ((single_run.prob_path, "float32", -1.0), (single_run.mask_path, "uint8", 255)):
        with rasterio.open(path) as src:
            assert src.crs == crs
            assert src.transform.almost_equals(transform)
            assert (src.height, src.width) == shape
            assert src.dtypes[0] == dtype and src.nodata == nodata
            assert src.profile["tiled"]
            assert src.overviews(1), f"{path.name} has no overviews"
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    prob, mask = _read(single_run.prob_path), _read(single_run.mask_path)
    assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(mask == 1, prob >= single_run.threshold)
    assert single_run.changed_pixels == int((mask == 1).sum()) > 0
    assert 0 < single_run.n_patches


def test_patch_layer_has_the_contract_columns(scene_pair, single_run) -> None:  # type: ignore[no-untyped-def]
    info = pyogrio.read_info(single_run.patches_path, layer=PATCH_LAYER)
    fields = list(info["fields"])  # the warning classifier (#20) adds its columns after these
    assert fields[: len(PATCH_COLUMNS) + len(SUPPRESS_COLUMNS)] == [*PATCH_COLUMNS, *SUPPRESS_COLUMNS]
    assert info["geometry_type"] == "Polygon"
    gdf = pyogrio.read_dataframe(single_run.patches_path, layer=PATCH_LAYER)
    with rasterio.open(scene_pair.before) as ref:
        assert gdf.crs == ref.crs
    assert gdf["patch_id"].is_unique and gdf["patch_id"].str.fullmatch(r"P\d{6}").all()
    assert list(gdf["patch_id"]) == sorted(gdf["patch_id"])
    assert (gdf["centroid_lat"].diff().dropna() <= 1e-6).all(), "ids run north to south"
    np.testing.assert_allclose(gdf["area_mu"], gdf["area_m2"] / (10000.0 / 15.0))
    # UTM 10 m pixels: areas are whole multiples of 100 m² before simplification; simplification of
    # pixel outlines by 1 m keeps them within a fraction of a pixel.
    np.testing.assert_allclose(gdf["area_m2"].sum(), single_run.changed_pixels * 100.0, rtol=0.05)
    assert ((gdf["prob_mean"] >= single_run.threshold) & (gdf["prob_max"] >= gdf["prob_mean"])).all()
    assert (gdf["t1"] == "2024-01-01").all() and (gdf["t2"] == "2024-07-01").all()
    # Scene identity ties every patch back to its pixels: absolute paths and the files' sha256.
    from cspon_rs.geo.files import file_sha256

    assert (gdf["scene_before"] == str(scene_pair.before.resolve())).all()
    assert (gdf["scene_before_sha256"] == file_sha256(scene_pair.before)).all()
    assert (gdf["detector"] == "test-tiny@0.0.1").all()
    assert gdf["centroid_lon"].between(113.0, 115.0).all() and gdf["centroid_lat"].between(21.0, 23.5).all()


def test_patches_cut_by_block_borders_are_merged(single_run) -> None:  # type: ignore[no-untyped-def]
    from cspon_rs.inference.vectorize import PatchAttributes, vectorize_mask

    attrs = PatchAttributes("2024-01-01", "2024-07-01", "b.tif", "a.tif", "x")
    whole = vectorize_mask(single_run.mask_path, single_run.prob_path, attrs, block_size=4096)
    tiled = vectorize_mask(single_run.mask_path, single_run.prob_path, attrs, block_size=37)
    assert len(whole) == len(tiled) > 10
    assert list(whole["patch_id"]) == list(tiled["patch_id"])
    np.testing.assert_allclose(tiled["area_m2"], whole["area_m2"], rtol=1e-9)
    np.testing.assert_allclose(tiled["prob_mean"], whole["prob_mean"], rtol=1e-6)
    assert tiled.geometry.geom_equals(whole.geometry).all()


def test_dask_local_cluster_gives_the_same_mask(scene_pair, tiny_checkpoint: Path, single_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("distributed")
    dask_run = detect_pair(
        scene_pair.before, scene_pair.after, tmp_path, checkpoint=tiny_checkpoint, tile_size=128, overlap=32,
        block_size=192,
        min_area_m2=0.0, workers=2, progress=False, device="cpu",
    )
    assert dask_run.n_blocks == single_run.n_blocks > 2
    np.testing.assert_allclose(_read(dask_run.prob_path), _read(single_run.prob_path), atol=1e-4)
    np.testing.assert_array_equal(_read(dask_run.mask_path), _read(single_run.mask_path))
    assert dask_run.n_patches == single_run.n_patches


def test_running_dask_scheduler_address(scene_pair, tiny_checkpoint: Path, single_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``scheduler="tcp://..."``: a cluster started elsewhere is used and left running."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        res = detect_pair(
            scene_pair.before, scene_pair.after, tmp_path, checkpoint=tiny_checkpoint, tile_size=128, overlap=32,
        block_size=192,
            min_area_m2=0.0, scheduler=cluster.scheduler_address, progress=False, device="cpu",
        )
        with distributed.Client(cluster.scheduler_address) as client:
            assert len(client.scheduler_info()["workers"]) == 2
    np.testing.assert_array_equal(_read(res.mask_path), _read(single_run.mask_path))


def test_local_cluster_workers_run_pytorch_at_full_speed() -> None:
    """Workers of our local cluster start without Dask's MALLOC_TRIM_THRESHOLD_ (it halves PyTorch's speed)
    and single-threaded (detect_pair hands PyTorch its share of the cores per task)."""
    distributed = pytest.importorskip("distributed")
    from cspon_rs.inference.execute import start_local_cluster

    with start_local_cluster(1) as cluster, distributed.Client(cluster) as client:
        env = client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")})
    (worker_env,) = env.values()
    assert worker_env == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}


def test_progress_callback_counts_windows_and_can_stop_the_run(  # type: ignore[no-untyped-def]
    scene_pair, tiny_checkpoint: Path, single_run, tmp_path: Path
) -> None:
    calls: list[tuple[int, int]] = []
    kw = {"checkpoint": tiny_checkpoint, "tile_size": 128, "overlap": 32, "block_size": 192, "min_area_m2": 0.0,
          "progress": False, "device": "cpu"}
    res = detect_pair(
        scene_pair.before, scene_pair.after, tmp_path / "ok", on_progress=lambda d, t: calls.append((d, t)), **kw
    )
    assert len(calls) == res.n_blocks == single_run.n_blocks > 2
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == res.n_windows and {t for _, t in calls} == {res.n_windows}

    class Stop(Exception):
        pass

    def stop_after_first_block(done: int, total: int) -> None:
        raise Stop(f"{done}/{total}")

    out = tmp_path / "stopped"
    with pytest.raises(Stop):
        detect_pair(scene_pair.before, scene_pair.after, out, on_progress=stop_after_first_block, **kw)
    assert not [p for p in out.iterdir() if p.suffix in (".tif", ".gpkg")], list(out.iterdir())
