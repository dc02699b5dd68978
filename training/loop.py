"""The training loop: ``train(config) -> TrainResult``.

Reproducible by construction: the model is initialised after seeding torch with ``optim.seed``; every
epoch draws its crops and augmentations from ``numpy.random.default_rng([seed, epoch])`` and reseeds torch
with a value derived from ``(seed, epoch)``, so an interrupted run resumed with ``resume=True`` from
``last.pt`` (model, optimiser, scheduler, RNG states, history) ends with the same weights as an
uninterrupted run of the same seed on the same machine and thread count.

Each epoch writes into the run folder:

* ``last.pt`` -- full state for ``--resume``; ``best.pt`` -- full state of the best epoch so far;
* ``best.safetensors`` + ``best.json`` -- the exported checkpoint (weights + model card) of the best epoch,
  with the decision threshold picked on the validation split (never on the test split);
* ``history.json`` and ``curves.png`` -- per-epoch loss, validation scores and learning rate.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cspon_rs.errors import CheckpointError, ConfigError, TrainingError
from cspon_rs.models.card import ModelCard, Normalization
from cspon_rs.models.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from cspon_rs.models.registry import create_model
from cspon_rs.training.augment import augment_batch
from cspon_rs.training.config import TrainConfig
from cspon_rs.training.datasets import (
    ChangePair,
    _n_bands,
    band_stats,
    data_fingerprint,
    load_pack,
    load_split,
    sample_batch,
)
from cspon_rs.training.distributed import (
    agree,
    barrier,
    broadcast_float,
    init_distributed,
    mean_over_processes,
)
from cspon_rs.training.evaluate import evaluate_pairs, model_proba, select_threshold
from cspon_rs.training.provenance import atomic_write_text, make_readable, run_provenance
from cspon_rs.training.runlog import RunLogger
from cspon_rs.training.synthetic import SyntheticSampler, extract_instances, load_host_images

__all__ = ["THRESHOLD_GRID", "TrainResult", "change_loss", "export_best", "score_parent", "seed_everything", "train"]

#: Decision thresholds searched on validation pixels: 0.01 .. 0.99 (a fine-tuned model's best threshold can
#: lie far from 0.5, below 0.05 or above 0.95).
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.01 * k, 2) for k in range(1, 100))


@dataclass
class TrainResult:
    """What a finished run produced."""

    out_dir: Path
    checkpoint: Path
    last_state: Path
    best_epoch: int
    best_score: float
    threshold: float
    history: list[dict[str, Any]]
    val_metrics: dict[str, Any] = field(default_factory=dict)
    test_metrics: dict[str, Any] = field(default_factory=dict)
    card: ModelCard | None = None
    parent_val: dict[str, Any] = field(default_factory=dict)
    main_process: bool = True  # False in the other processes of a torchrun run (they report nothing)

    @property
    def worse_than_parent(self) -> bool | None:
        """True when a fine-tune ended below its parent on the validation split (None: nothing to compare)."""
        if not self.parent_val or "score" not in self.parent_val:
            return None
        return bool(self.best_score < float(self.parent_val["score"]))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def change_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    *,
    dice_weight: float = 1.0,
    pos_weight: float = 1.0,
) -> torch.Tensor:
    """BCE + ``dice_weight`` x soft Dice over the valid pixels of a batch.

    Args:
        logits: ``(B, 1, H, W)`` raw model output.
        target: ``(B, H, W)`` 0/1 labels (float).
        valid: ``(B, H, W)`` 1 where the pixel counts.
        dice_weight: Weight of the Dice term.
        pos_weight: BCE weight of changed pixels.
    """
    x = logits[:, 0].float()
    pw = torch.tensor(pos_weight, dtype=x.dtype, device=x.device)
    bce = F.binary_cross_entropy_with_logits(x, target, reduction="none", pos_weight=pw)
    n_valid = valid.sum().clamp_min(1.0)
    loss = (bce * valid).sum() / n_valid
    if dice_weight > 0:
        p = torch.sigmoid(x) * valid
        t = target * valid
        dice = 1.0 - (2.0 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
        loss = loss + dice_weight * dice
    return loss


def _atomic_torch_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _save_checkpoint(model: nn.Module, card: ModelCard, stem: Path | str, *, half: bool) -> tuple[Path, Path]:
    """:func:`save_checkpoint`, then both files readable by others (0644 less the umask)."""
    weights, card_path = save_checkpoint(model, card, stem, half=half)
    return make_readable(weights), make_readable(card_path)


def _plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o")
    axes[0].set(title="training loss (BCE + Dice)", xlabel="epoch")
    if any("val_f1" in h for h in history):
        axes[1].plot(epochs, [h.get("val_f1", np.nan) for h in history], marker="o", label="F1 @ 0.5")
        axes[1].plot(epochs, [h.get("val_f1_best", np.nan) for h in history], marker="s", label="F1 @ best threshold")
        axes[1].legend()
    axes[1].set(title="validation F1 (change class)", xlabel="epoch", ylim=(0, 1))
    axes[2].plot(epochs, [h["lr"] for h in history], marker="o")
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def _config_fingerprint(config: TrainConfig) -> dict[str, Any]:
    d = config.model_dump(mode="json")
    d.pop("output", None)
    return d


def _device(config: TrainConfig) -> torch.device:
    want = config.optim.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("optim.device is 'cuda' but CUDA is not available; use 'auto' or 'cpu'")
        return torch.device("cuda")
    return torch.device("cpu")


_NORM_TEXT = {
    "band_stats": "(x - mean) / std, mean/std over valid pixels of both dates of the train split",
    "imagenet_8bit": "(x - 127.5) / 127.5 on 8-bit values (the ImageNet weights' mean = std = 0.5 on 0-1)",
    "band_stats_half": "(x - mean) / (2 std), mean/std over valid pixels of both dates of the train split",
}


def _normalization(config: TrainConfig, train_pairs: list[ChangePair]) -> tuple[list[float], list[float]]:
    """Card normalisation for ``config.model.normalization`` (see ``ModelConfig``)."""
    n = _n_bands(train_pairs[0])
    if config.model.normalization == "imagenet_8bit":
        return [127.5] * n, [127.5] * n
    mean, std = band_stats(train_pairs)
    if config.model.normalization == "band_stats_half":
        std = [2.0 * s for s in std]
    return mean, std


def _encoder_params(model: nn.Module) -> set[int]:
    encoder = getattr(model, "encoder", None)
    return {id(p) for p in encoder.parameters()} if isinstance(encoder, nn.Module) else set()


def _optimizer(
    model: nn.Module, config: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with the encoder at ``lr x encoder_lr_factor``, and a cosine (or constant) schedule per step."""
    opt = config.optim
    enc = _encoder_params(model)
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in enc], "lr": opt.lr},
        {"params": [p for p in model.parameters() if id(p) in enc], "lr": opt.lr * opt.encoder_lr_factor},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=opt.lr, weight_decay=opt.weight_decay)
    total = max(steps_per_epoch * opt.epochs, 1)

    def cosine(step: int) -> float:
        if opt.scheduler == "constant":
            return 1.0
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)


def _freeze_bn(model: nn.Module) -> None:
    """Put the encoder's batch-norm layers in eval mode (running statistics stay as loaded)."""
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Module):
        for m in encoder.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _set_encoder_trainable(model: nn.Module, trainable: bool) -> None:
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Module):
        for p in encoder.parameters():
            p.requires_grad_(trainable)


def _synthetic_sampler(
    config: TrainConfig, train_pairs: list[ChangePair], hosts: list[np.ndarray] | None = None
) -> SyntheticSampler | None:
    """Sampler of synthetic crops from the training pairs' change instances and the host images
    (``hosts``, else read from ``data.synthetic.hosts``)."""
    syn = config.data.synthetic
    if syn is None or syn.paste_fraction + syn.nochange_fraction == 0:
        return None
    instances = extract_instances(train_pairs, min_px=syn.min_instance_px)
    hosts = list(hosts) if hosts is not None else load_host_images(syn.hosts, syn.host_bands)
    n = train_pairs[0].before.shape[0]
    for k, h in enumerate(hosts):
        if h.shape[0] != n:
            raise ConfigError(
                f"synthetic host image {k + 1} has {h.shape[0]} bands but the training pairs have {n}; "
                "set data.synthetic.host_bands"
            )
    hosts += [p.before for p in train_pairs] + [p.after for p in train_pairs]
    return SyntheticSampler(instances, hosts, max_instances=syn.max_instances_per_crop)


class _BatchSource(torch.utils.data.Dataset[tuple[torch.Tensor, ...]]):
    """Batch ``k`` of an epoch: crops, normalisation and augmentation drawn from ``rng([seed, epoch, k])``.

    Each batch depends only on its own index, so DataLoader workers give the same batches as one process.
    """

    def __init__(
        self,
        pairs: list[ChangePair],
        config: TrainConfig,
        card: ModelCard,
        synthetic: SyntheticSampler | None,
        epoch: int,
        steps: int,
    ) -> None:
        self.pairs, self.config, self.synthetic = pairs, config, synthetic
        self.epoch, self.steps = epoch, steps
        self.mean = np.asarray(card.normalization.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(card.normalization.std, dtype=np.float32).reshape(1, -1, 1, 1)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, k: int) -> tuple[torch.Tensor, ...]:
        cfg = self.config
        rng = np.random.default_rng([cfg.optim.seed, self.epoch, k])
        syn = cfg.data.synthetic
        a, b, lab, valid = sample_batch(
            self.pairs,
            rng,
            batch_size=cfg.optim.batch_size,
            crop_size=cfg.data.crop_size,
            positive_fraction=cfg.data.positive_fraction,
            scale_range=(cfg.augment.scale_min, cfg.augment.scale_max),
            synthetic=self.synthetic,
            paste_fraction=syn.paste_fraction if syn else 0.0,
            nochange_fraction=syn.nochange_fraction if syn else 0.0,
        )
        a, b, lab, valid = augment_batch(
            (a - self.mean) / self.std, (b - self.mean) / self.std, lab, valid, rng, cfg.augment
        )
        return (
            torch.from_numpy(a),
            torch.from_numpy(b),
            torch.from_numpy(lab.astype(np.float32)),
            torch.from_numpy(valid.astype(np.float32)),
        )


def _val_score(
    model: nn.Module, card: ModelCard, val_pairs: list[ChangePair], device: torch.device, select_on: str
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Validation figures of a model: threshold picked on ``THRESHOLD_GRID``, pooled and mean per-pair F1."""
    probs = [model_proba(model, card, p.before, p.after, device) for p in val_pairs]
    thr, best_f1 = select_threshold(probs, val_pairs, THRESHOLD_GRID)
    at_half = evaluate_pairs(probs, val_pairs, threshold=0.5).f1
    per_pair = [evaluate_pairs([pr], [p], threshold=thr).f1 for pr, p in zip(probs, val_pairs, strict=True)]
    mean_f1 = float(np.mean(per_pair))
    figures = {"val_f1": at_half, "val_f1_best": best_f1, "val_threshold": thr, "val_f1_mean_pairs": mean_f1}
    figures["score"] = mean_f1 if select_on == "mean_f1" else best_f1
    return figures, probs


def score_parent(
    parent: nn.Module, card: ModelCard, val_pairs: list[ChangePair], device: torch.device, select_on: str
) -> dict[str, Any]:
    """Score the checkpoint a run starts from on the validation split, before any training step.

    The figures use the same protocol as every epoch (threshold re-selected on the validation pixels), so
    ``score`` compares directly with the run's best validation score.
    """
    figures, probs = _val_score(parent, card, val_pairs, device, select_on)
    at_card = evaluate_pairs(probs, val_pairs, threshold=card.threshold).f1
    return {
        **figures,
        "pairs": [p.id for p in val_pairs],
        "selected_on": select_on,
        "card_threshold": card.threshold,
        "val_f1_at_card_threshold": at_card,
    }


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def train(
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
    progress: bool = True,
    max_epochs: int | None = None,
    pack: str | Path | None = None,
    splits: tuple[list[ChangePair], list[ChangePair], list[ChangePair]] | None = None,
) -> TrainResult:
    """Train a change model as described by ``config``.

    Args:
        config: The run configuration.
        out_dir: Run folder (default ``config.output.dir``).
        resume: Continue from ``<out_dir>/last.pt`` after its last finished epoch.
        init_from: Checkpoint to fine-tune from (overrides ``config.init_from``); its architecture,
            init_kwargs, bands and normalisation are used instead of the config's.
        progress: Show tqdm progress bars.
        max_epochs: Stop after this many finished epochs in total (to simulate an interruption);
            the schedule still follows ``config.optim.epochs``.
        pack: Take the pairs and synthetic hosts from this pack (``cspon-rs pack-data``) instead of reading
            the sources; it must have been made from the same data config (sources, splits, bands).
        splits: ``(train, val, test)`` pairs already in memory (e.g. sparse windows around verified
            warnings, :mod:`cspon_rs.training.verified`); the config's sources are then not read.

    Returns:
        A :class:`TrainResult` naming the exported best checkpoint.

    Raises:
        TrainingError: The loss became NaN/inf (the message names epoch and step).
        CheckpointError: ``resume`` without ``last.pt``, or a ``last.pt`` from a different config.
        LabelError, MissingFileError, GridMismatchError: Bad training data.
    """
    t_start = time.time()  # the wall-clock budget (optim.max_minutes) counts from here, data loading included
    opt_cfg = config.optim
    out = Path(out_dir) if out_dir is not None else config.output.dir
    out.mkdir(parents=True, exist_ok=True)
    if opt_cfg.num_threads:
        torch.set_num_threads(opt_cfg.num_threads)
    device = _device(config)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    if world > 1 and opt_cfg.batch_size % world:
        raise ConfigError(
            f"optim.batch_size {opt_cfg.batch_size} must be a multiple of the {world} processes "
            "(each trains on an equal share of every batch)"
        )
    ctx = init_distributed(device.type)  # torchrun: one process per GPU (NCCL) or per CPU share (gloo)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    progress = progress and ctx.main
    use_amp = device.type == "cuda" and opt_cfg.amp
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    hosts: list[np.ndarray] | None = None
    if splits is not None:
        train_pairs, val_pairs, test_pairs = (list(x) for x in splits)
    elif pack is not None:
        packed, hosts, meta = load_pack(pack)
        if meta.get("data") != json.loads(json.dumps(data_fingerprint(config.data))):
            raise ConfigError(f"{pack}: pack was made from a different data config (sources, splits or bands)")
        train_pairs, val_pairs = packed.get("train", []), packed.get("val", [])
        test_pairs = packed.get("test", [])
    else:
        train_pairs = load_split(config.data, "train", stream=config.data.stream)
        val_pairs = load_split(config.data, "val")
        test_pairs = load_split(config.data, "test")
    if not train_pairs:
        raise ConfigError(f"{config.data.root}: the train split is empty")
    bands = config.data.bands or train_pairs[0].bands
    for p in train_pairs + val_pairs + test_pairs:
        if _n_bands(p) != len(bands):
            raise ConfigError(f"pair {p.id!r} has {_n_bands(p)} bands but the run uses {bands}")

    init_value = init_from if init_from is not None else config.init_from
    # a path or a shipped name (rgb, s2-rgbn)
    init_path = resolve_checkpoint(init_value, len(bands)) if init_value is not None else None
    architecture, init_kwargs = config.model.architecture, dict(config.model.init_kwargs)
    init_loaded = None
    if init_path is not None:
        init_loaded = load_checkpoint(init_path, expected_bands=len(bands), device=device)
        architecture, init_kwargs = init_loaded.card.architecture, dict(init_loaded.card.init_kwargs)
        mean, std = list(init_loaded.card.normalization.mean), list(init_loaded.card.normalization.std)
    else:
        mean, std = _normalization(config, train_pairs)

    card = ModelCard(
        name=config.output.name,
        version=config.output.version,
        architecture=architecture,
        init_kwargs=init_kwargs,
        bands=list(bands),
        normalization=Normalization(mean=mean, std=std),
        tile_size=config.data.crop_size,
        pixel_size_m=config.pixel_size_m,
        threshold=0.5,
        training_data={
            "kind": config.data.kind,
            "root": str(config.data.root),
            "train": [p.id for p in train_pairs],
            "val": [p.id for p in val_pairs],
            "test": [p.id for p in test_pairs],
            "sources": [{"name": src.name, "kind": src.kind, "root": str(src.root)} for src in config.data.sources()],
            "normalization": _NORM_TEXT[config.model.normalization]
            if init_path is None
            else f"inherited from {init_path}",
            "init_from": str(init_path) if init_path is not None else None,
            "crop_size": config.data.crop_size,
            "crops_per_epoch": config.data.crops_per_epoch,
            "epochs": opt_cfg.epochs,
            "seed": opt_cfg.seed,
        },
        notes=config.output.notes,
    )

    from cspon_rs.models.card_stats import contract_from_pairs

    # the range and statistics of this run's imagery, so detect maps any scene to it (a 16-bit stretch included)
    card.input = contract_from_pairs(train_pairs + val_pairs, list(bands), seed=opt_cfg.seed)
    card.training_data["provenance"] = run_provenance(config, parent=init_path)
    seed_everything(opt_cfg.seed)
    pretrained = config.model.pretrained and init_loaded is None
    model: nn.Module = create_model(
        architecture, in_channels=len(bands), pretrained=pretrained, bands=list(bands), **init_kwargs
    )
    card.training_data["encoder_init"] = (
        getattr(model, "encoder_init", None) if pretrained else ("from " + str(init_path) if init_path else "random")
    )
    parent_val: dict[str, Any] = {}
    if init_loaded is not None:
        model.load_state_dict(init_loaded.model.state_dict())
        if val_pairs and not resume:
            parent_val = score_parent(init_loaded.model, init_loaded.card, val_pairs, device, opt_cfg.select_on)
            parent_val["checkpoint"] = init_loaded.card.detector_id
            if progress:
                tqdm.write(
                    f"parent {init_loaded.card.detector_id}: validation F1 {parent_val['val_f1_best']:.3f} "
                    f"(@{parent_val['val_threshold']:.2f}) before fine-tuning"
                )
    model.to(device)
    if use_amp:
        model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(config.data.crops_per_epoch / opt_cfg.batch_size)
    optimizer, scheduler = _optimizer(model, config, steps_per_epoch)
    synthetic = _synthetic_sampler(config, train_pairs, hosts)
    if synthetic is not None:
        card.training_data["synthetic"] = {
            **config.data.synthetic.model_dump(mode="json"),  # type: ignore[union-attr]
            "instances": len(synthetic.instances),
            "host_images": len(synthetic.hosts),
        }
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    history: list[dict[str, Any]] = []
    start_epoch, best_score, best_epoch = 0, -math.inf, -1
    last_path, best_state_path = out / "last.pt", out / "best.pt"
    best_stem = out / "best"
    if resume:
        if not last_path.is_file():
            raise CheckpointError(f"{last_path}: nothing to resume from (no finished epoch in {out})")
        state = torch.load(last_path, map_location=device, weights_only=False)
        if state["config"] != _config_fingerprint(config):
            changed = sorted(k for k in state["config"] if state["config"].get(k) != _config_fingerprint(config).get(k))
            raise CheckpointError(
                f"{last_path}: was written with a different config (sections {changed} differ); "
                "resume with the same config or start a new run folder"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        history = state["history"]
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        card = ModelCard.model_validate(state["card"])
        parent_val = dict(state.get("parent_val") or {})

    end_epoch = opt_cfg.epochs if max_epochs is None else min(opt_cfg.epochs, max_epochs)
    stopped = ""
    logger = RunLogger(out, enabled=ctx.main)
    for epoch in range(start_epoch, end_epoch):
        t0 = time.time()
        torch.manual_seed(opt_cfg.seed * 100_003 + epoch)
        model.train()
        if opt_cfg.freeze_encoder_bn:
            _freeze_bn(model)
        _set_encoder_trainable(model, epoch >= opt_cfg.warmup_epochs)
        net: nn.Module = model
        if ctx.enabled:  # wrapped per epoch: the trainable parameters change after the warm-up
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[ctx.local_rank] if device.type == "cuda" else None
            )
        losses = []
        batches = _BatchSource(train_pairs, config, card, synthetic, epoch, steps_per_epoch)
        loader = torch.utils.data.DataLoader(
            batches,
            batch_size=None,
            num_workers=opt_cfg.loader_workers,
            pin_memory=device.type == "cuda",
            worker_init_fn=_worker_init,
        )
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{opt_cfg.epochs}", disable=not progress, leave=False)
        for step, batch in enumerate(bar):
            if ctx.enabled:  # the same batch as one process would draw; this process's share of it
                batch = [t[ctx.rank :: ctx.world] for t in batch]
            ta, tb, tl, tv = batch
            ta, tb = ta.to(device, non_blocking=True), tb.to(device, non_blocking=True)
            tl, tv = tl.to(device, non_blocking=True), tv.to(device, non_blocking=True)
            if use_amp:
                ta = ta.contiguous(memory_format=torch.channels_last)
                tb = tb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, enabled=use_amp):
                logits = net(ta, tb)
            loss = change_loss(logits, tl, tv, dice_weight=opt_cfg.dice_weight, pos_weight=opt_cfg.pos_weight)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                    f"(global step {epoch * steps_per_epoch + step + 1}); lower optim.lr (now {opt_cfg.lr}) "
                    "or check the input data for NaN/inf values"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(float(loss.item()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            over = opt_cfg.max_minutes is not None and time.time() - t_start > 60 * opt_cfg.max_minutes
            if agree(ctx, over, device):  # wall clock: stop inside the epoch, then validate and save
                stopped = f"time budget of {opt_cfg.max_minutes} min used at step {step + 1}/{steps_per_epoch}"
                break
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": mean_over_processes(ctx, float(np.mean(losses)), device),
            "lr": float(optimizer.param_groups[0]["lr"]),
            "steps": len(losses),
        }
        model.eval()
        thr, score = 0.5, -record["train_loss"]
        if val_pairs and ctx.main:
            figures, probs = _val_score(model, card, val_pairs, device, opt_cfg.select_on)
            score, thr, mean_f1 = figures.pop("score"), figures["val_threshold"], figures["val_f1_mean_pairs"]
            record.update(figures)
        if opt_cfg.select_on == "last":  # the held-out pair chooses no epoch
            score = float(epoch + 1)
        score = broadcast_float(ctx, score, device)  # every process takes the same decisions
        record["seconds"] = round(time.time() - t0, 2)
        history.append(record)
        improved = score > best_score
        if improved:
            best_score, best_epoch = score, epoch + 1
            card = card.model_copy(update={"threshold": float(thr)})
            if val_pairs and ctx.main:
                val_m = evaluate_pairs(probs, val_pairs, threshold=thr)
                card.metrics = {
                    "val": {
                        "pairs": [p.id for p in val_pairs],
                        "threshold": thr,
                        "f1_mean_pairs": mean_f1,
                        "selected_on": opt_cfg.select_on,
                        **val_m.as_dict(),
                    },
                    "best_epoch": best_epoch,
                }
            else:
                card.metrics = {"best_epoch": best_epoch}
            if parent_val:
                card.metrics["parent_val"] = parent_val
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
            "history": history,
            "best_score": best_score,
            "best_epoch": best_epoch,
            "card": card.model_dump(mode="json"),
            "config": _config_fingerprint(config),
            "parent_val": parent_val,
        }
        if opt_cfg.patience is not None and not stopped and epoch + 1 - best_epoch >= opt_cfg.patience:
            stopped = f"early stopping: no better validation score for {opt_cfg.patience} epochs"
        if stopped:
            record["stopped"] = stopped
        if ctx.main:
            _atomic_torch_save(state, last_path)
            if improved:
                _atomic_torch_save(state, best_state_path)
                _save_checkpoint(model, card, best_stem, half=config.output.half_precision_export)
            _atomic_write_text(out / "history.json", json.dumps(history, indent=2) + "\n")
            _plot_curves(history, out / "curves.png")
            logger.log(record)
        barrier(ctx)
        if progress and ctx.main:
            msg = f"epoch {epoch + 1}: loss {record['train_loss']:.4f}"
            if val_pairs:
                msg += f", val F1 {record['val_f1']:.3f} (@0.5) / {record['val_f1_best']:.3f} (@{thr:.2f})"
            tqdm.write(msg + f" [{record['seconds']:.0f} s]" + (" *" if improved else ""))
            if stopped:
                tqdm.write(f"stopping after epoch {epoch + 1}: {stopped}")
        if stopped:
            end_epoch = epoch + 1
            break
    logger.close()

    if best_epoch < 0:
        raise TrainingError(f"{out}: no epoch finished")
    best = load_checkpoint(best_stem, device=device)
    card = best.card
    test_metrics: dict[str, Any] = {}
    if ctx.main and test_pairs and (end_epoch == opt_cfg.epochs or opt_cfg.max_minutes is not None or stopped):
        probs = [model_proba(best.model, card, p.before, p.after, device) for p in test_pairs]
        m = evaluate_pairs(probs, test_pairs, threshold=card.threshold)
        test_metrics = {"pairs": [p.id for p in test_pairs], "threshold": card.threshold, **m.as_dict()}
        card.metrics = {**card.metrics, "test": test_metrics}
        _save_checkpoint(best.model, card, best_stem, half=config.output.half_precision_export)
    barrier(ctx)
    return TrainResult(
        out_dir=out,
        checkpoint=best_stem.with_suffix(".safetensors"),
        last_state=last_path,
        best_epoch=best_epoch,
        best_score=float(best_score),
        threshold=card.threshold,
        history=history,
        val_metrics=dict(card.metrics.get("val", {})),
        test_metrics=test_metrics,
        card=card,
        parent_val=parent_val,
        main_process=ctx.main,
    )


def export_best(
    config: TrainConfig, run_dir: str | Path, dest: str | Path, *, half: bool = True, tile_size: int | None = None
) -> ModelCard:
    """Copy a run's best checkpoint to ``dest`` (stem), completing its card with test-split metrics.

    Works on finished and on stopped runs (the card then records how many epochs were completed); the test
    split is only ever scored here and at the end of :func:`train`, never used to choose anything.

    Args:
        config: The run's config (for the test split).
        run_dir: Run folder holding ``best.safetensors``/``best.json`` and ``last.pt``.
        dest: Output stem, e.g. ``models/checkpoints/oscd_s2_rgbn_siamunet_lite``.
        half: Store float16 weights.
        tile_size: Inference window edge to record in the card (px, multiple of 32); the networks are fully
            convolutional, so windows larger than the training crops give them more context. The training
            crop size stays in ``training_data.crop_size``.

    Returns:
        The exported card.
    """
    run = Path(run_dir)
    best = load_checkpoint(run / "best")
    card = best.card
    last = run / "last.pt"
    if last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        card.training_data = {
            **card.training_data,
            "epochs_completed": len(state["history"]),
            "best_epoch": state["best_epoch"],
        }
    if tile_size is not None:
        if tile_size % 32:
            raise ConfigError(f"tile_size must be a multiple of 32, got {tile_size}")
        card.tile_size = tile_size
    test_pairs = load_split(config.data, "test")
    if test_pairs:
        probs = [model_proba(best.model, card, p.before, p.after) for p in test_pairs]
        m = evaluate_pairs(probs, test_pairs, threshold=card.threshold)
        card.metrics = {
            **card.metrics,
            "test": {"pairs": [p.id for p in test_pairs], "threshold": card.threshold, **m.as_dict()},
        }
        card.training_data = {**card.training_data, "test": [p.id for p in test_pairs]}
    _save_checkpoint(best.model, card, dest, half=half)
    return card
