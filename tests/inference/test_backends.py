"""Same masks from every backend (PyTorch, ONNX Runtime) and from 1 process vs a separately started Dask cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cspon_rs.errors import CheckpointError, ConfigError, MissingDependencyError
from cspon_rs.inference.detect import detect_pair

REPO = Path(__file__).resolve().parents[2]
KW = {"tile_size": 128, "overlap": 32, "block_size": 192, "min_area_m2": 0.0, "progress": False, "device": "cpu"}


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def torch_run(scene_pair, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return detect_pair(scene_pair.before, scene_pair.after, tmp_path_factory.mktemp("torch"),
                       checkpoint=tiny_checkpoint, **KW)


def test_onnx_backend_gives_the_torch_mask(  # type: ignore[no-untyped-def]
    scene_pair, tiny_checkpoint: Path, torch_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("CSPON_ONNX_CACHE", str(tmp_path / "cache"))
    res = detect_pair(scene_pair.before, scene_pair.after, tmp_path / "onnx", checkpoint=tiny_checkpoint,
                      backend="onnx", **KW)
    torch_mask, onnx_mask = _read(torch_run.mask_path), _read(res.mask_path)
    assert (torch_mask == 1).sum() > 100
    assert (torch_mask != onnx_mask).mean() <= 0.005
    np.testing.assert_allclose(_read(res.prob_path), _read(torch_run.prob_path), atol=1e-3)
    # the export is cached by the checkpoint's sha256 and its card records it
    (card_path,) = (tmp_path / "cache").glob("*-fp32.onnx.json")
    record = json.loads(card_path.read_text())["onnx_export"]
    assert record["source_sha256"] == torch_run.model_sha256 and record["opset"] >= 13


def test_onnx_backend_without_onnxruntime_is_one_line(scene_pair, tiny_checkpoint: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A fresh interpreter in which `import onnxruntime` fails (sys.modules entry None), running the real CLI.
    code = ("import sys; sys.modules['onnxruntime'] = None; sys.argv = ['cspon-rs'] + sys.argv[1:]; "
            "from cspon_rs.cli import main; main()")
    proc = subprocess.run(
        [sys.executable, "-c", code, "detect", "--before", str(scene_pair.before), "--after", str(scene_pair.after),
         "--checkpoint", str(tiny_checkpoint), "--backend", "onnx", "--out", str(tmp_path / "o"), "--no-progress"],
        cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "onnxruntime" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_onnxruntime_error_type(monkeypatch: pytest.MonkeyPatch) -> None:
    from cspon_rs.inference.onnx_backend import require_onnxruntime

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match="'onnxruntime'"):
        require_onnxruntime()


def test_unexportable_layer_is_named(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from cspon_rs.models.onnx_export import export_model_onnx

    class Spectrum(torch.nn.Module):  # FFT has no ONNX export in opset 17
        def forward(self, x):  # type: ignore[no-untyped-def]
            return torch.fft.rfft2(x).abs()[..., : x.shape[-1]]

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mix = torch.nn.Conv2d(8, 8, 1)
            self.spectrum = Spectrum()
            self.head = torch.nn.Conv2d(8, 1, 1)

        def forward(self, a, b):  # type: ignore[no-untyped-def]
            return self.head(self.spectrum(self.mix(torch.cat([a, b], 1))))

    with pytest.raises(CheckpointError, match=r"layer 'spectrum' \(Spectrum\).*fft"):
        export_model_onnx(Net(), 4, tmp_path / "net.onnx", tile=64)


def test_gpu_requested_but_absent(scene_pair, tiny_checkpoint: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    kw = {**KW, "device": "cuda"}
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        detect_pair(scene_pair.before, scene_pair.after, tmp_path / "a", checkpoint=tiny_checkpoint, **kw)
    with pytest.warns(UserWarning, match="running on the CPU"):
        res = detect_pair(scene_pair.before, scene_pair.after, tmp_path / "b", checkpoint=tiny_checkpoint,
                          fallback_cpu=True, **kw)
    assert res.changed_pixels > 0


def _wait_for(path: Path, seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while not path.is_file():
        if time.monotonic() > end:
            raise TimeoutError(f"{path} not written in {seconds} s")
        time.sleep(0.2)


def test_separately_started_dask_scheduler_and_two_workers(  # type: ignore[no-untyped-def]
    scene_pair, tiny_checkpoint: Path, torch_run, tmp_path: Path
) -> None:
    """`dask scheduler` + 2 `dask worker` processes started from the command line, as a bureau would."""
    pytest.importorskip("distributed")
    dask_cli = Path(sys.executable).with_name("dask")
    if not dask_cli.is_file():
        pytest.skip("the `dask` command is not installed next to this Python")
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"} | {"PYTHONPATH": str(REPO)}
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([str(dask_cli), "scheduler", "--port", "0", "--dashboard-address", ":0",
                               "--scheduler-file", str(sched_file)], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_for(sched_file)
        for _ in range(2):
            procs.append(subprocess.Popen([str(dask_cli), "worker", "--scheduler-file", str(sched_file),
                                           "--nthreads", "1", "--nworkers", "1", "--no-dashboard"], env=env,
                                          cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = json.loads(sched_file.read_text())["address"]
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        res = detect_pair(scene_pair.before, scene_pair.after, tmp_path / "out", checkpoint=tiny_checkpoint,
                          scheduler=address, **KW)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    assert res.n_blocks == torch_run.n_blocks > 2
    np.testing.assert_array_equal(_read(res.mask_path), _read(torch_run.mask_path))
    np.testing.assert_allclose(_read(res.prob_path), _read(torch_run.prob_path), atol=1e-5)
