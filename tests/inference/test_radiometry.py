"""Input that cannot fail silently (#20 item 1): measured, refused with one line, or brought to the card's range.

Real GeoTIFFs: copies of the bundled Sentinel-2 sample in 16-bit DN, 8-bit and 0-1 float give the same
patches with the shipped ``s2-rgbn``; a uint16 RGB copy goes into ``rgb`` normalised and the summary says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from inferencetest_support import BANDS, make_pair_arrays, write_scene
from rasterio.windows import Window

from cspon_rs.errors import InputRangeError
from cspon_rs.inference.detect import detect_pair
from cspon_rs.inference.radiometry import METHODS, array_stats, measure_date, plan_radiometry
from cspon_rs.inference.suppress import SuppressConfig, default_mmu_m2
from cspon_rs.inference.vectorize import PATCH_LAYER
from cspon_rs.models.checkpoint import load_card, resolve_checkpoint

REPO = Path(__file__).resolve().parents[2]
#: The stated tolerance: patches (unsuppressed) and changed pixels agree within 10 % across scalings.
TOLERANCE = 0.10


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cspon_rs.cli", "detect", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _cli_in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                    *args: str | Path) -> tuple[int, str]:
    """``cspon-rs detect ARGS`` through the CLI's own entry point in this process: (exit code, stderr)."""
    from cspon_rs.cli import main

    monkeypatch.setattr(sys, "argv", ["cspon-rs", "detect", *map(str, args)])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _copy(src_path: Path, dst: Path, convert, dtype: str, window: Window | None = None) -> Path:  # type: ignore[no-untyped-def]
    with rasterio.open(src_path) as src:
        data = src.read(window=window).astype(np.float64)
        profile = src.profile | {"dtype": dtype, "tiled": False}
        if window is not None:
            profile |= {"width": int(window.width), "height": int(window.height),
                        "transform": src.window_transform(window)}
        descriptions = src.descriptions
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    out = convert(data)
    profile["count"] = out.shape[0]
    with rasterio.open(dst, "w", **profile) as dst_ds:
        dst_ds.write(out.astype(dtype))
        dst_ds.descriptions = tuple(descriptions[: out.shape[0]])
    return dst


def _to_8bit(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x / 16.0), 1, 255)


def _scaled_copies(sample_dir: Path, tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """16-bit DN (as shipped), 8-bit (/16) and float 0-1 (/10000) copies of a 320 x 320 px crop of the sample."""
    win = Window(100, 150, 320, 320)
    pairs = {}
    for name, conv, dtype in (("16-bit", lambda x: x, "uint16"), ("8-bit", _to_8bit, "uint8"),
                              ("float", lambda x: x / 10000.0, "float32")):
        folder = tmp_path / name
        folder.mkdir()
        pairs[name] = (
            _copy(sample_dir / "before_20160927.tif", folder / "before_20160927.tif", conv, dtype, win),
            _copy(sample_dir / "after_20180323.tif", folder / "after_20180323.tif", conv, dtype, win),
        )
    return pairs


def _warnings(path: Path, *, classifier: bool = False) -> int:
    """Patches no suppression cue flagged (the input work's output); with ``classifier``, also none the warning
    classifier flagged (what becomes a warning)."""
    df = pyogrio.read_dataframe(path, layer=PATCH_LAYER, read_geometry=False)
    kept = df["suppressed_by"].isna()
    if not classifier:
        kept |= df["suppressed_by"] == "classifier"
    return int(kept.sum())


def test_the_maps_do_not_depend_on_the_input_gain() -> None:
    """Every method but 'none' gives the same model input for x, 10 x and x / 255 (float 0-1)."""
    card = load_card(resolve_checkpoint("s2-rgbn"))
    before, after = (a.astype(np.float64) for a in make_pair_arrays())
    outs: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    for gain in (1.0, 10.0, 1 / 255.0):
        b, a = before * gain, after * gain
        for method in METHODS:
            ra = plan_radiometry(array_stats(b, None, source="b", bands=BANDS),
                                 array_stats(a, None, source="a", bands=BANDS), card, method)
            outs[method].append(np.stack([ra.apply_before(b), ra.apply_after(a)]))
    for method in METHODS:
        first = outs[method][0]
        same = all(np.allclose(o, first, rtol=1e-3, atol=1e-2 * float(np.abs(first).mean())) for o in outs[method])
        assert same == (method != "none"), method


def test_8bit_16bit_and_float_copies_give_the_same_patches(sample_dir: Path, tmp_path: Path) -> None:
    pairs = _scaled_copies(sample_dir, tmp_path)
    res = {}
    for name, (before, after) in pairs.items():
        res[name] = detect_pair(before, after, tmp_path / f"out-{name}", checkpoint="s2-rgbn", backend="torch",
                                device="cpu", progress=False, torch_threads=1)
    ref = res["16-bit"]
    card = load_card(resolve_checkpoint("s2-rgbn"))
    assert card.input is not None and ref.radiometry is not None
    assert ref.radiometry.method == card.input.radiometry != "none"
    assert ref.n_patches > 5
    n_ref = _warnings(ref.patches_path)
    with rasterio.open(ref.mask_path) as src:
        mask_ref = src.read(1) == 1
    for name in ("8-bit", "float"):
        r = res[name]
        assert abs(r.changed_pixels - ref.changed_pixels) <= TOLERANCE * ref.changed_pixels, name
        assert abs(_warnings(r.patches_path) - n_ref) <= max(1, TOLERANCE * n_ref), name
        # the classifier's decisions near its operating point may flip on the 8-bit copy's quantised pixels
        n_clf, n_clf_ref = _warnings(r.patches_path, classifier=True), _warnings(ref.patches_path, classifier=True)
        assert abs(n_clf - n_clf_ref) <= max(2, 2 * TOLERANCE * n_clf_ref), (name, n_clf, n_clf_ref)
        with rasterio.open(r.mask_path) as src:
            mask = src.read(1) == 1
        iou = (mask & mask_ref).sum() / max(1, (mask | mask_ref).sum())
        assert iou >= 1 - TOLERANCE, (name, iou)
    assert res["8-bit"].radiometry.lines()[1].startswith("after: 8-bit")  # type: ignore[union-attr]
    assert "the card was trained on 16-bit" in res["8-bit"].summary()
    assert "float" in res["float"].summary()


def test_without_normalisation_the_8bit_copy_is_not_silent(sample_dir: Path, tmp_path: Path) -> None:
    """radiometry none on 8-bit input into the 16-bit model: a note says so, and 0 patches say why."""
    before, after = _scaled_copies(sample_dir, tmp_path)["8-bit"]
    res = detect_pair(before, after, tmp_path / "out", checkpoint="s2-rgbn", backend="torch", device="cpu",
                      progress=False, torch_threads=1, radiometry="none")
    text = res.summary()
    assert "not rescaled" in text and "median" in text and "radiometry other than 'none'" in text
    if res.n_patches == 0:
        assert "0 patches: max change probability" in text


def test_uint16_rgb_into_the_8bit_rgb_model_is_normalised_and_said(sample_dir: Path, tmp_path: Path) -> None:
    """#25 trap 2: a uint16 RGB image (8-bit values x 40) gives the rgb model what the 8-bit copy gives."""
    win = Window(100, 150, 192, 192)
    res = {}
    for name, conv, dtype in (("8-bit", lambda x: _to_8bit(x)[:3], "uint8"),
                              ("16-bit", lambda x: _to_8bit(x)[:3] * 40.0, "uint16")):
        folder = tmp_path / name
        folder.mkdir()
        b = _copy(sample_dir / "before_20160927.tif", folder / "before_20160927.tif", conv, dtype, win)
        a = _copy(sample_dir / "after_20180323.tif", folder / "after_20180323.tif", conv, dtype, win)
        res[name] = detect_pair(b, a, tmp_path / f"out-{name}", checkpoint="rgb", backend="torch", device="cpu",
                                progress=False, torch_threads=1, threshold=0.3)
    r16 = res["16-bit"]
    assert r16.radiometry is not None and r16.radiometry.method != "none"
    assert "before: 16-bit" in r16.summary() and "the card was trained on 8-bit" in r16.summary()
    assert r16.changed_pixels == pytest.approx(res["8-bit"].changed_pixels, rel=0.02, abs=20)


@pytest.mark.parametrize("case", ["constant", "three-band", "all-nodata"])
def test_inputs_that_cannot_fit_end_with_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before, after = make_pair_arrays()
    b = write_scene(tmp_path / "before_20240101.tif", before, descriptions=BANDS)
    if case == "constant":
        after[2] = 0
        bad = write_scene(tmp_path / "after_20240701.tif", after, descriptions=BANDS)
        expect = ["after_20240701.tif", "band 3 (B02)", "constant", "value 0"]
    elif case == "three-band":
        bad = write_scene(tmp_path / "after_20240701.tif", after[:3], descriptions=BANDS[:3])
        expect = ["after_20240701.tif", "3 bands", "expects 4 bands", "B08"]
    else:
        bad = write_scene(tmp_path / "after_20240701.tif", np.zeros_like(after), nodata=0, descriptions=BANDS)
        expect = ["after_20240701.tif", "100.0% of the pixels are nodata"]
    args = ["--before", b, "--after", bad, "--checkpoint", "s2-rgbn", "--out", tmp_path / "out", "--no-progress",
            "--backend", "torch"]
    if case == "all-nodata":  # one case as a real subprocess (the installed entry point), the others in-process
        proc = _cli(*args)
        code, err = proc.returncode, proc.stderr
    else:
        code, err = _cli_in_process(capsys, monkeypatch, *args)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for word in expect:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in err


def test_a_nearly_constant_band_is_refused_by_the_check(tmp_path: Path) -> None:
    before, _ = make_pair_arrays()
    before[1] = 500
    before[1, :3, :3] = 900  # a few pixels differ: still unusable
    path = write_scene(tmp_path / "b.tif", before, descriptions=BANDS)
    card = load_card(resolve_checkpoint("s2-rgbn"))
    with pytest.raises(InputRangeError, match=r"b\.tif: band 2 \(B03\) is almost constant \(value 500"):
        plan_radiometry(measure_date(path, bands=BANDS), measure_date(path, bands=BANDS), card)


def test_old_cards_without_statistics_still_run(scene_pair, tiny_checkpoint: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = detect_pair(scene_pair.before, scene_pair.after, tmp_path / "out", checkpoint=tiny_checkpoint,
                      backend="torch", device="cpu", progress=False)
    assert res.radiometry is not None and res.radiometry.method == "none"
    assert "older checkpoint" in res.summary()


def test_zero_patches_say_why(scene_pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two identical dates: nothing changes, and the summary says why there is no patch."""
    import shutil

    same = shutil.copy(scene_pair.before, tmp_path / "after_20240701.tif")
    res = detect_pair(scene_pair.before, same, tmp_path / "out", checkpoint="spectral", progress=False)
    assert res.n_patches == 0
    assert res.empty_reason.startswith("0 patches: max change probability 0.00 < threshold 0.50")
    assert res.empty_reason in res.summary()


def test_mmu_default_follows_the_pixel_size() -> None:
    assert default_mmu_m2(10.0) == 700.0
    assert default_mmu_m2(5.0) == 175.0
    assert default_mmu_m2(1.0) == 50.0 and default_mmu_m2(0.5) == 50.0
    assert default_mmu_m2(None) == 700.0
    cfg = SuppressConfig()
    assert cfg.mmu.min_area_m2 == "auto"
    assert cfg.for_pixel_size(2.0).mmu.min_area_m2 == 50.0
    assert SuppressConfig.model_validate({"mmu": {"min_area_m2": 120}}).for_pixel_size(2.0).mmu.min_area_m2 == 120


def test_mmu_on_metre_imagery_keeps_building_sized_patches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 m pixels: a 12 m x 12 m new roof (144 m²) survives the auto MMU; the old fixed 700 m² removed it;
    --mmu sets the bureau's own value."""
    from rasterio.transform import from_origin

    before, after = make_pair_arrays()
    tr = from_origin(205000.0, 2475000.0, 1.0, 1.0)
    after[:, 60:72, 60:72] = np.array([2600, 2500, 2400, 2700], dtype=np.uint16)[:, None, None]
    b = write_scene(tmp_path / "b_20240101.tif", before, transform=tr, descriptions=BANDS)
    a = write_scene(tmp_path / "a_20240701.tif", after, transform=tr, descriptions=BANDS)
    auto = detect_pair(b, a, tmp_path / "auto", checkpoint="spectral", progress=False, suppress=SuppressConfig())
    df = pyogrio.read_dataframe(auto.patches_path, layer=PATCH_LAYER)
    roof = df[(df.area_m2 > 100) & (df.area_m2 < 200)]
    assert len(roof) >= 1 and roof["suppressed_by"].isna().all()
    old = SuppressConfig.model_validate({"mmu": {"min_area_m2": 700}})
    fixed = detect_pair(b, a, tmp_path / "fixed", checkpoint="spectral", progress=False, suppress=old)
    df = pyogrio.read_dataframe(fixed.patches_path, layer=PATCH_LAYER)
    assert (df.loc[(df.area_m2 > 100) & (df.area_m2 < 200), "suppressed_by"] == "mmu").all()
    code, err = _cli_in_process(capsys, monkeypatch, "--before", b, "--after", a, "--checkpoint", "spectral",
                                "--out", tmp_path / "bad", "--mmu", "big")
    assert code == 2 and "--mmu: expected 'auto' or an area in m²" in err


def test_band_aliases_red_b04_r(shared_data: Path) -> None:
    """#25: red = B04 = R, nir = B08 = NIR wherever bands are checked or read."""
    from cspon_rs.errors import BandMismatchError
    from cspon_rs.models.card import canonical_band, same_bands
    from cspon_rs.training.datasets import load_oscd

    card = load_card(resolve_checkpoint("s2-rgbn"))
    card.check_bands(["red", "green", "blue", "nir"], "words")
    card.check_bands(["R", "G", "B", "NIR"], "letters")
    with pytest.raises(BandMismatchError, match="aliases"):
        card.check_bands(["nir", "red", "green", "blue"], "wrong order")
    assert canonical_band("b04") == canonical_band("Red") == "red" and card.band_index("NIR") == 3
    assert same_bands(["R", "G", "B"], load_card(resolve_checkpoint("rgb")).bands)
    root = shared_data / "OSCD" / "train_labelled"
    if not root.is_dir():
        pytest.skip(f"OSCD not found in {root}")
    by_words = load_oscd(root, ["rennes"], ["red", "green", "blue", "nir"])[0]
    by_s2 = load_oscd(root, ["rennes"], card.bands)[0]
    assert np.array_equal(by_words.before, by_s2.before) and np.array_equal(by_words.after, by_s2.after)
