"""Leave-one-pair-out cross-validation of a training recipe, and the final model it vouches for.

With six labelled Sentinel-2 cities, one validation city cannot say whether a recipe generalises: the
shipped ``s2-rgbn`` chose its epoch and threshold on Rennes alone. Here every training/validation pair of a
config is held out once (for OSCD: one city per fold):

1. **folds** (:func:`run_folds`): one network per held-out pair, trained on all the others for a fixed
   number of epochs (``select_on: last``, so the held-out pair chooses nothing); ``<out>/fold_<id>/``;
2. **out-of-fold figures** (:func:`out_of_fold`): each pair's probabilities from the network that never
   saw it. A pair's threshold is picked on the *other* pairs' out-of-fold probabilities, so its figures are
   honest; the pooled threshold over all pairs becomes the final model's;
3. **final model** (:func:`train_final`): the same recipe on every pair, with the temperature and threshold
   fitted on the pooled out-of-fold logits in its card, and the per-pair figures in
   ``metrics.cross_validation``.

The fold networks also give the warning classifier what the issue asks for: patches from a network that did
not see the pair (``cspon-rs classifier fit --folds``). Test pairs are never read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cspon_rs.errors import ConfigError
from cspon_rs.training.config import TrainConfig

__all__ = [
    "CrossValidation",
    "FoldFigures",
    "fold_config",
    "fold_dirs",
    "fold_figures",
    "out_of_fold",
    "run_folds",
    "train_final",
]


def _held_out_ids(config: TrainConfig) -> list[str]:
    """The train + val ids of the config's one source (each is held out once)."""
    from cspon_rs.training.datasets import resolve_split

    if len(config.data.sources()) > 1:
        names = [src.name for src in config.data.extra_sources]
        raise ConfigError(
            f"cross-validation holds out the pairs of one source, and this config also has extra_sources {names}; "
            "drop them (--set data.extra_sources=[]) or list every pair in one pairs CSV (cspon-rs dataset init)"
        )
    ids = resolve_split(config.data, "train") + resolve_split(config.data, "val")
    if len(ids) < 3:
        raise ConfigError(
            f"cross-validation needs at least 3 train/val pairs, {config.data.root} has {ids}"
        )
    return ids


def _recipe_config(config: TrainConfig, train: list[str], val: list[str], epochs: int | None) -> TrainConfig:
    """A copy of ``config`` on these splits, no test, keeping its last epoch (nothing here chooses an epoch)."""
    cfg = config.model_copy(deep=True)
    cfg.data.train, cfg.data.val, cfg.data.test = train, val, []
    cfg.optim.select_on = "last"
    if epochs is not None:
        cfg.optim.epochs = epochs
    return cfg


def fold_config(config: TrainConfig, held_out: str, *, epochs: int | None = None) -> TrainConfig:
    """The config of one fold: train on every train/val pair but ``held_out``, validate on it, no test.

    The fold keeps the last epoch (``optim.select_on = "last"``): the held-out pair only reports.
    """
    ids = _held_out_ids(config)
    if held_out not in ids:
        raise ConfigError(f"{held_out!r} is not one of the config's train/val pairs {ids}")
    cfg = _recipe_config(config, [i for i in ids if i != held_out], [held_out], epochs)
    cfg.output.name = f"{config.output.name}-cv-{held_out}"
    return cfg


def fold_dirs(out_dir: str | Path, config: TrainConfig) -> dict[str, Path]:
    """``{held-out id: fold folder}`` of a cross-validation run."""
    return {i: Path(out_dir) / f"fold_{i}" for i in _held_out_ids(config)}


def run_folds(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Train one network per held-out pair; a fold with a finished ``best.safetensors`` is not trained again.

    Returns:
        ``{held-out id: checkpoint path}``.
    """
    from cspon_rs.training.loop import train

    done: dict[str, Path] = {}
    dirs = fold_dirs(out_dir, config)
    for k, (held, fdir) in enumerate(dirs.items(), 1):
        ckpt = fdir / "best.safetensors"
        if (fdir / "fold.json").exists() and ckpt.exists():
            echo(f"fold {k}/{len(dirs)} ({held} held out): already trained, {ckpt}")
            done[held] = ckpt
            continue
        echo(f"fold {k}/{len(dirs)}: training on {len(dirs) - 1} pairs, {held} held out")
        result = train(fold_config(config, held, epochs=epochs), out_dir=fdir, progress=progress)
        (fdir / "fold.json").write_text(
            json.dumps({"held_out": held, "epochs": result.best_epoch, "checkpoint": ckpt.name}, indent=2) + "\n"
        )
        done[held] = result.checkpoint
    return done


@dataclass(frozen=True)
class FoldFigures:
    """Out-of-fold figures of a cross-validation run.

    Attributes:
        per_pair: ``{id: figures}``: pixel precision/recall/F1/IoU and object recall at the threshold picked
            on the other pairs (``threshold``), and F1 at the best threshold for that pair (``f1_oracle``,
            for reference only).
        threshold: Threshold maximising pooled F1 over all out-of-fold probabilities.
        pooled: Pooled figures at ``threshold``.
    """

    per_pair: dict[str, dict[str, Any]]
    threshold: float
    pooled: dict[str, Any]

    @property
    def mean_f1(self) -> float:
        """Mean over pairs of the honest per-pair F1."""
        return float(np.mean([f["f1"] for f in self.per_pair.values()]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": "leave-one-pair-out; a pair's threshold picked on the other pairs' out-of-fold probabilities",
            "threshold": self.threshold,
            "mean_f1": self.mean_f1,
            "pooled": self.pooled,
            "per_pair": self.per_pair,
        }

    def table(self) -> str:
        """Markdown table, one row per held-out pair."""
        rows = ["| held out | threshold | precision | recall | F1 | object recall | F1 at its own best |",
                "|---|---|---|---|---|---|---|"]
        for pid, f in self.per_pair.items():
            rows.append(
                f"| {pid} | {f['threshold']:.2f} | {f['precision']:.3f} | {f['recall']:.3f} | {f['f1']:.3f} | "
                f"{f['object_recall']:.3f} | {f['f1_oracle']:.3f} |"
            )
        p = self.pooled
        rows.append(
            f"| **pooled** | {self.threshold:.2f} | {p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} | "
            f"{p['object_recall']:.3f} | |"
        )
        return "\n".join(rows)


def _figures(m: Any) -> dict[str, Any]:
    d = m.as_dict()
    keep = ("precision", "recall", "f1", "iou", "kappa", "object_recall", "objects", "objects_hit", "tp", "fp", "fn")
    return {k: d[k] for k in keep if k in d}


def _oof_logits(
    config: TrainConfig, out_dir: str | Path, methods: tuple[str, ...], device: str
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """``(pairs by id, {method: {id: out-of-fold raw logits}})``, each date mapped by the fold's card."""
    from cspon_rs.inference.radiometry import array_stats, plan_radiometry
    from cspon_rs.models.checkpoint import load_checkpoint
    from cspon_rs.training.datasets import load_split
    from cspon_rs.training.evaluate import model_proba

    pairs = {p.id: p for p in load_split(config.data, "train") + load_split(config.data, "val")}
    logits: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    for held, fdir in fold_dirs(out_dir, config).items():
        ckpt = fdir / "best.safetensors"
        if not ckpt.exists():
            raise ConfigError(f"{ckpt}: fold {held!r} is not trained; run the folds first")
        loaded = load_checkpoint(ckpt, device=torch.device(device))
        p, card = pairs[held], loaded.card
        for method in methods:
            ra = plan_radiometry(array_stats(p.before, p.valid, source=p.id, bands=card.bands),
                                 array_stats(p.after, p.valid, source=p.id, bands=card.bands), card, method)
            logits[method][held] = model_proba(loaded.model, card, ra.apply_before(p.before),
                                               ra.apply_after(p.after), device, logits=True)
    return pairs, logits


def fold_figures(probs: dict[str, np.ndarray], pairs: dict[str, Any]) -> FoldFigures:
    """Honest per-pair figures (threshold from the other pairs) and the pooled threshold of OOF ``probs``."""
    from cspon_rs.training.evaluate import evaluate_pairs, select_threshold

    ids = list(probs)
    per_pair: dict[str, dict[str, Any]] = {}
    for held in ids:
        others = [i for i in ids if i != held]
        thr, _ = select_threshold([probs[i] for i in others], [pairs[i] for i in others])
        _, oracle = select_threshold([probs[held]], [pairs[held]])
        m = evaluate_pairs([probs[held]], [pairs[held]], threshold=thr)
        per_pair[held] = {"threshold": thr, **_figures(m), "f1_oracle": oracle}
    thr_all, _ = select_threshold([probs[i] for i in ids], [pairs[i] for i in ids])
    pooled = _figures(evaluate_pairs([probs[i] for i in ids], [pairs[i] for i in ids], threshold=thr_all))
    return FoldFigures(per_pair=per_pair, threshold=thr_all, pooled=pooled)


@dataclass(frozen=True)
class CrossValidation:
    """What :func:`out_of_fold` found.

    Attributes:
        radiometry: The chosen radiometric normalisation.
        figures: ``{method: figures}`` (probabilities at temperature 1, whatever the fold cards hold).
        calibration: Temperature and threshold fitted on the chosen method's pooled out-of-fold logits (the
            record of :func:`~cspon_rs.models.calibration.calibrate_logits`).
    """

    radiometry: str
    figures: dict[str, FoldFigures]
    calibration: dict[str, Any]


def out_of_fold(
    config: TrainConfig, out_dir: str | Path, *, methods: tuple[str, ...] | None = None, device: str = "cpu"
) -> CrossValidation:
    """Each held-out pair scored by the network that never saw it, under each radiometry method.

    The chosen method has the best mean honest per-pair F1 among the methods invariant to the input's gain
    (``none`` is scored for reference only); ties go to the simpler method (order of ``METHODS``). Its
    pooled out-of-fold logits then give the temperature and threshold of the final model.
    """
    from cspon_rs.inference.radiometry import METHODS
    from cspon_rs.models.calibration import apply_temperature, calibrate_logits

    methods = methods or METHODS
    pairs, logits = _oof_logits(config, out_dir, methods, device)
    figures = {m: fold_figures({i: apply_temperature(z, 1.0) for i, z in logits[m].items()}, pairs)
               for m in methods}
    eligible = [m for m in methods if m != "none"] or list(methods)
    chosen = max(eligible, key=lambda m: (round(figures[m].mean_f1, 4), -eligible.index(m)))
    ids = list(logits[chosen])
    _, _, calibration = calibrate_logits(
        [logits[chosen][i] for i in ids], [pairs[i] for i in ids], previous_threshold=figures[chosen].threshold,
        method="temperature scaling on the pooled out-of-fold logits of the fold networks (pixel NLL, bounded "
        "search on log T in [-3, 3])",
    )
    return CrossValidation(radiometry=chosen, figures=figures, calibration=calibration)


def train_final(
    config: TrainConfig,
    out_dir: str | Path,
    cv: CrossValidation,
    *,
    epochs: int | None = None,
    progress: bool = True,
) -> Path:
    """Train the recipe on every train/val pair; its card takes the out-of-fold radiometry, temperature,
    threshold and figures. The fold cards get the same temperature, so their patches have the final model's
    probability scale (``classifier fit --folds``).

    Returns:
        The final checkpoint (``<out>/final/best.safetensors``).
    """
    from cspon_rs.exports.fileio import atomic_write_text
    from cspon_rs.models.card import ModelCard
    from cspon_rs.training.datasets import resolve_split
    from cspon_rs.training.loop import train

    result = train(_recipe_config(config, _held_out_ids(config), [], epochs), out_dir=Path(out_dir) / "final",
                   progress=progress)
    card_path = result.checkpoint.with_suffix(".json")
    card = ModelCard.model_validate_json(card_path.read_text(encoding="utf-8"))
    chosen, calibration = cv.figures[cv.radiometry], cv.calibration
    card.temperature, card.threshold = calibration["temperature"], calibration["threshold"]
    card.metrics = {
        **card.metrics,
        "cross_validation": {"radiometry": cv.radiometry, **chosen.as_dict()},
        "calibration": calibration,
    }
    card.training_data["test"] = resolve_split(config.data, "test")  # named, never read: refused for fitting
    card.training_data["validation"] = (
        f"leave-one-pair-out over {len(chosen.per_pair)} pairs ({', '.join(chosen.per_pair)}); threshold "
        "pooled over the out-of-fold probabilities"
    )
    if card.input is not None:
        card.input = card.input.model_copy(update={
            "radiometry": cv.radiometry,
            "radiometry_validation": {
                "chosen": cv.radiometry,
                "criterion": "mean over held-out pairs of the out-of-fold pixel F1 at a threshold picked on the "
                "other pairs; 'none' not eligible (not invariant to the input's gain)",
                "mean_f1": {m: round(f.mean_f1, 4) for m, f in cv.figures.items()},
            },
        })
    atomic_write_text(card_path, card.model_dump_json(indent=2) + "\n")
    for fdir in fold_dirs(out_dir, config).values():
        fold_card = fdir / "best.json"
        fold = json.loads(fold_card.read_text(encoding="utf-8"))
        fold["temperature"] = calibration["temperature"]
        atomic_write_text(fold_card, json.dumps(fold, indent=2, ensure_ascii=False) + "\n")
    return result.checkpoint
