"""Several labelled sources in one config, label thresholds, packs, synthetic pairs and scale augmentation.

Data: seeded LEVIR-style folders written to tmp_path (trainingtest_support), and the real LEVIR-CD and
DSIFN-CD samples of the shared data folder where it is present.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from trainingtest_support import smooth_host, two_source_yaml, write_two_source_project

from cspon_rs.errors import ConfigError, LabelError
from cspon_rs.models.card import ModelCard, Normalization
from cspon_rs.training.config import TrainConfig, load_train_config
from cspon_rs.training.datasets import (
    ChangePair,
    data_fingerprint,
    load_levir,
    load_pack,
    load_split,
    make_pack,
    sample_batch,
)
from cspon_rs.training.loop import _BatchSource, _synthetic_sampler, _worker_init, train
from cspon_rs.training.synthetic import SyntheticSampler, extract_instances, load_host_images

SYNTHETIC = """  synthetic: {paste_fraction: 0.5, nochange_fraction: 0.25, hosts: [../hosts], min_instance_px: 16}
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """``<tmp>/project`` with data/a, data/b, hosts/ and an empty configs/ folder."""
    root = tmp_path / "project"
    write_two_source_project(root)
    return root


def _config(project: Path, name: str = "train.yaml", **kwargs: str) -> Path:
    path = project / "configs" / name
    path.write_text(two_source_yaml(**kwargs), encoding="utf-8")
    return path


def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cwd = tmp_path / "somewhere" / "else"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    return cwd


# -- several sources, paths relative to the config file ---------------------------------------------------


def test_relative_roots_resolve_against_the_config_file(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(project, data_extra=SYNTHETIC)
    _elsewhere(tmp_path, monkeypatch)
    cfg = load_train_config(Path(os.path.relpath(path)))  # a relative config path from another folder
    configs = project.resolve() / "configs"
    assert cfg.data.root == configs / "../data/a"
    assert cfg.data.extra_sources[0].root == configs / "../data/b"
    assert cfg.data.synthetic is not None and cfg.data.synthetic.hosts == [configs / "../hosts"]
    assert cfg.output.dir == configs / "../runs/tiny"

    train_pairs = load_split(cfg.data, "train")
    assert [p.id for p in train_pairs] == [
        "pair_0", "pair_1", "pair_2", "pair_3", "b/pair_0", "b/pair_1", "b/pair_2",
    ]  # fmt: skip
    assert [p.id for p in load_split(cfg.data, "val")] == ["pair_4", "b/pair_3"]
    assert [p.id for p in load_split(cfg.data, "test")] == ["pair_5", "b/pair_4"]
    # the extra source's pixels are its own (data/b was written with another seed)
    direct = load_levir(project / "data" / "b", ["pair_0"])[0]
    b0 = next(p for p in train_pairs if p.id == "b/pair_0")
    np.testing.assert_array_equal(b0.before, direct.before)
    np.testing.assert_array_equal(b0.label, direct.label)
    a0 = next(p for p in train_pairs if p.id == "pair_0")
    assert not np.array_equal(a0.before, b0.before)
    assert [s.name for s in cfg.data.sources()] == ["a", "b"]


def test_duplicate_source_names_are_rejected(project: Path) -> None:
    path = _config(project, name_b="a")
    with pytest.raises(ConfigError, match="source names must differ"):
        load_train_config(path)


def _grey_label(levir_root: Path, name: str) -> np.ndarray:
    """Give one label stray grey values (anti-aliased edges, as after a resampling); returns the label."""
    path = levir_root / "label" / f"{name}.png"
    lab = np.asarray(Image.open(path)).copy()
    edge = ndimage.binary_dilation(lab > 0) & (lab == 0)
    lab[edge] = 128
    lab[0, :3] = 3  # a few near-zero JPEG-style values
    Image.fromarray(lab).save(path)
    return lab


def test_stray_label_values_need_label_threshold(project: Path) -> None:
    lab = _grey_label(project / "data" / "b", "pair_1")
    path = _config(project)
    with pytest.raises(LabelError, match="label_threshold") as info:
        load_split(load_train_config(path).data, "train")
    assert "pair_1" in str(info.value) and "128" in str(info.value)

    path = _config(project, extra_b="      label_threshold: 127\n")
    cfg = load_train_config(path)
    assert cfg.data.extra_sources[0].label_threshold == 127 and cfg.data.label_threshold is None
    pair = next(p for p in load_split(cfg.data, "train") if p.id == "b/pair_1")
    np.testing.assert_array_equal(pair.label, (lab > 127).astype(np.uint8))
    assert set(np.unique(pair.label)) == {0, 1}


# -- packs ------------------------------------------------------------------------------------------------


def _same_pairs(got: list[ChangePair], want: list[ChangePair]) -> None:
    assert [p.id for p in got] == [p.id for p in want]
    for g, w in zip(got, want, strict=True):
        assert g.bands == w.bands
        for name in ("before", "after", "label", "valid"):
            a, b = getattr(g, name), getattr(w, name)
            assert a.dtype == b.dtype and a.shape == b.shape, (g.id, name)
            np.testing.assert_array_equal(a, b)


def test_pack_round_trip_and_refusal_of_another_config(project: Path, tmp_path: Path) -> None:
    cfg = load_train_config(_config(project, data_extra=SYNTHETIC))
    pack = make_pack(cfg.data, tmp_path / "packs" / "tiny.npz")
    splits, hosts, meta = load_pack(pack)
    assert set(splits) == {"train", "val"}  # the test split stays where the data lives
    _same_pairs(splits["train"], load_split(cfg.data, "train"))
    _same_pairs(splits["val"], load_split(cfg.data, "val"))
    assert cfg.data.synthetic is not None
    want_hosts = load_host_images(cfg.data.synthetic.hosts)
    assert len(hosts) == len(want_hosts) == 2
    for h, w in zip(hosts, want_hosts, strict=True):
        assert h.dtype == np.float32
        np.testing.assert_array_equal(h, w)
    assert meta["data"] == data_fingerprint(cfg.data)

    # asked for: the test split too
    with_test, _, _ = load_pack(make_pack(cfg.data, tmp_path / "with_test.npz", ("train", "val", "test")))
    _same_pairs(with_test["test"], load_split(cfg.data, "test"))

    # a config whose data differ (a threshold on source b) must not train from this pack
    other = load_train_config(_config(project, name="other.yaml", extra_b="      label_threshold: 127\n"))
    with pytest.raises(ConfigError, match="different data config"):
        train(other, pack=pack, out_dir=tmp_path / "refused", progress=False)
    assert not list((tmp_path / "refused").glob("*.pt"))


# -- synthetic pairs --------------------------------------------------------------------------------------


def _instance_source(rng: np.random.Generator) -> ChangePair:
    """A dark textured pair with one bright 10 x 10 'new building' (label = the building) in date 2."""
    before = smooth_host(rng, size=32).astype(np.float32)
    after = before.copy()
    label = np.zeros((32, 32), dtype=np.uint8)
    label[11:21, 11:21] = 1
    after[:, 11:21, 11:21] = 230.0
    return ChangePair("src", before, after, label, np.ones((32, 32), bool), ["R", "G", "B"], "fixture")


def test_pasted_crops_label_exactly_the_date2_only_instances() -> None:
    rng = np.random.default_rng(0)
    instances = extract_instances([_instance_source(rng)], min_px=16, margin=6)
    assert len(instances) == 1 and instances[0].mask.sum() == 100
    host = smooth_host(rng, size=128).astype(np.float32)
    assert host.max() < 120
    sampler = SyntheticSampler(instances, [host], max_instances=1, both_dates_share=0.5)
    seen = {"date2": 0, "both": 0}
    for seed in range(40):
        a, b, lab, valid = sampler.pasted(np.random.default_rng(seed), 64)
        assert a.shape == b.shape == (3, 64, 64) and lab.shape == (64, 64) and valid.all()
        assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1}
        bright_a, bright_b = a.mean(axis=0) > 150, b.mean(axis=0) > 150
        # change label <=> the building is in date 2 and not in date 1
        np.testing.assert_array_equal(lab.astype(bool), bright_b & ~bright_a, err_msg=f"seed {seed}")
        if lab.any():
            seen["date2"] += 1
            assert lab.sum() == 100
        else:  # pasted into both dates: an existing building, no change
            assert bright_b.sum() == 100 and np.array_equal(bright_a, bright_b)
            seen["both"] += 1
    assert seen["date2"] > 5 and seen["both"] > 5


def test_nochange_crops_are_perturbed_but_correlated() -> None:
    rng = np.random.default_rng(1)
    host = smooth_host(rng, size=128).astype(np.float32)
    sampler = SyntheticSampler([], [host])
    assert sampler.max_value == host.max()
    for seed in range(10):
        a, b, lab, valid = sampler.nochange(np.random.default_rng(seed), 64)
        assert not lab.any() and lab.dtype == np.uint8 and valid.all()
        assert np.abs(a - b).max() > 1.0  # another "date"
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert r > 0.8, (seed, r)
        assert 0.6 < b.mean() / a.mean() < 1.6
        assert b.min() >= 0 and b.max() <= host.max()  # a brighter "date" saturates, never leaves the range


def test_instances_of_the_training_pairs(project: Path) -> None:
    cfg = load_train_config(_config(project, data_extra=SYNTHETIC))
    train_pairs = load_split(cfg.data, "train")
    comps = 0
    for p in train_pairs:
        labelled, n = ndimage.label(p.label, structure=np.ones((3, 3)))
        comps += int(sum((labelled == k).sum() >= 16 for k in range(1, n + 1)))
    instances = extract_instances(train_pairs, min_px=16)
    assert len(instances) == comps > 0
    for inst in instances:
        assert inst.before.shape == inst.after.shape and inst.mask.shape == inst.alpha.shape
        assert inst.alpha[inst.mask].min() == 1.0 and inst.alpha.max() <= 1.0
    sampler = _synthetic_sampler(cfg, train_pairs)
    assert sampler is not None
    assert len(sampler.instances) == comps
    assert len(sampler.hosts) == 2 + 2 * len(train_pairs)  # host files + both dates of every training pair


# -- sampling ---------------------------------------------------------------------------------------------


def test_sample_batch_with_scale_range(project: Path) -> None:
    cfg = load_train_config(_config(project, data_extra=SYNTHETIC))
    pairs = load_split(cfg.data, "train")
    sampler = _synthetic_sampler(cfg, pairs)
    for seed in range(4):
        a, b, lab, valid = sample_batch(
            pairs,
            np.random.default_rng(seed),
            batch_size=6,
            crop_size=64,
            scale_range=(0.5, 2.0),
            synthetic=sampler,
            paste_fraction=0.3,
            nochange_fraction=0.2,
        )
        assert a.shape == b.shape == (6, 3, 64, 64) and a.dtype == np.float32
        assert lab.shape == valid.shape == (6, 64, 64)
        assert lab.dtype == np.uint8 and valid.dtype == bool
        assert set(np.unique(lab)) <= {0, 1}
        assert np.isfinite(a).all() and np.isfinite(b).all()
        for img in (a, b):  # synthetic crops stay in the data's 8-bit range (gains and colour matching clip)
            assert img.min() >= 0 and img.max() <= 255
    # same generator state, same batch
    x = sample_batch(pairs, np.random.default_rng(7), batch_size=3, crop_size=64, scale_range=(0.5, 2.0))
    y = sample_batch(pairs, np.random.default_rng(7), batch_size=3, crop_size=64, scale_range=(0.5, 2.0))
    for u, v in zip(x, y, strict=True):
        np.testing.assert_array_equal(u, v)


def _batches(source: _BatchSource, workers: int) -> list[tuple[torch.Tensor, ...]]:
    loader = torch.utils.data.DataLoader(source, batch_size=None, num_workers=workers, worker_init_fn=_worker_init)
    return list(loader)


def test_batches_do_not_depend_on_loader_workers(project: Path) -> None:
    cfg: TrainConfig = load_train_config(
        _config(project, data_extra=SYNTHETIC, augment="augment: {scale_min: 0.5, scale_max: 2.0}")
    )
    pairs = load_split(cfg.data, "train")
    sampler = _synthetic_sampler(cfg, pairs)
    card = ModelCard(
        name="t",
        version="0",
        architecture="siam_unet_lite",
        bands=["R", "G", "B"],
        normalization=Normalization(mean=[127.5] * 3, std=[127.5] * 3),
    )
    source = _BatchSource(pairs, cfg, card, sampler, epoch=1, steps=4)
    in_process, two_workers = _batches(source, 0), _batches(source, 2)
    assert len(in_process) == len(two_workers) == 4
    for k, (x, y) in enumerate(zip(in_process, two_workers, strict=True)):
        for u, v in zip(x, y, strict=True):
            assert torch.equal(u, v), k
    assert not torch.equal(in_process[0][0], in_process[1][0])

    # batch k is drawn from default_rng([seed, epoch, k]): without augmentation it is sample_batch's crops
    cfg.augment.flips, cfg.augment.rot90 = False, False
    cfg.augment.brightness, cfg.augment.contrast = 0.0, 0.0
    plain = _BatchSource(pairs, cfg, card, sampler, epoch=1, steps=4)
    assert cfg.data.synthetic is not None
    for k in (0, 3):
        ta, tb, tl, tv = plain[k]
        a, b, lab, valid = sample_batch(
            pairs,
            np.random.default_rng([cfg.optim.seed, 1, k]),
            batch_size=cfg.optim.batch_size,
            crop_size=64,
            positive_fraction=cfg.data.positive_fraction,
            scale_range=(0.5, 2.0),
            synthetic=sampler,
            paste_fraction=cfg.data.synthetic.paste_fraction,
            nochange_fraction=cfg.data.synthetic.nochange_fraction,
        )
        np.testing.assert_array_equal(tl.numpy(), lab.astype(np.float32))
        np.testing.assert_array_equal(tv.numpy(), valid.astype(np.float32))
        np.testing.assert_allclose(ta.numpy(), (a - 127.5) / 127.5, rtol=0, atol=1e-6)
        np.testing.assert_allclose(tb.numpy(), (b - 127.5) / 127.5, rtol=0, atol=1e-6)


# -- the real LEVIR-CD and DSIFN-CD samples ---------------------------------------------------------------


def test_real_levir_and_dsifn_as_two_sources(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    levir, dsifn = shared_data / "LEVIR-CD", shared_data / "DSIFN-CD"
    if not (levir / "label").is_dir() or not (dsifn / "label").is_dir():
        pytest.skip(f"LEVIR-CD or DSIFN-CD sample not found under {shared_data}")
    folder = tmp_path / "cfg"
    folder.mkdir()
    path = folder / "real.yaml"
    path.write_text(
        f"""data:
  name: levir
  kind: levir
  root: {os.path.relpath(levir, folder)}
  crop_size: 64
  extra_sources:
    - {{name: dsifn, kind: levir, root: {os.path.relpath(dsifn, folder)}}}
""",
        encoding="utf-8",
    )
    _elsewhere(tmp_path, monkeypatch)
    cfg = load_train_config(path)
    pairs = load_split(cfg.data, "train")
    n_levir = len(list((levir / "label").glob("*.png")))
    n_dsifn = len(list((dsifn / "label").glob("*.png")))
    assert len(pairs) == n_levir + n_dsifn
    assert sum(p.id.startswith("dsifn/") for p in pairs) == n_dsifn
    assert all(p.bands == ["R", "G", "B"] and p.before.shape[0] == 3 for p in pairs)

    instances = extract_instances(pairs, min_px=16)
    assert len(instances) > 10
    sampler = SyntheticSampler(instances, [p.before for p in pairs])
    labelled = 0
    for seed in range(8):
        a, b, lab, valid = sampler.pasted(np.random.default_rng(seed), 96)
        assert set(np.unique(lab)) <= {0, 1} and valid.all()
        assert 0 <= min(a.min(), b.min()) and max(a.max(), b.max()) <= 255  # 8-bit data stay 8-bit
        if lab.any():  # the pasted change stands out from the perturbed background
            labelled += 1
            assert np.abs(b - a)[:, lab == 1].mean() > np.abs(b - a)[:, lab == 0].mean()
    assert labelled >= 4
    a, b, lab, valid = sample_batch(
        pairs, np.random.default_rng(0), batch_size=4, crop_size=64, scale_range=(0.5, 2.0), synthetic=sampler,
        paste_fraction=0.25, nochange_fraction=0.25,
    )  # fmt: skip
    assert a.shape == (4, 3, 64, 64) and set(np.unique(lab)) <= {0, 1}
