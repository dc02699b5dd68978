"""Fine-tune a checkpoint on one county's field verifications and score it against its parent.

``fine_tune(init_from, labels, out_dir)`` is the second half of the closed loop (the first is
``cspon-rs labels export``): sparse windows around the verified warnings (:mod:`cspon_rs.training.verified`)
train a copy of the parent checkpoint; a held-back share of the verifications scores the candidate *and*
the parent, each with its decision threshold re-selected on them, and ``<out_dir>/holdout.json`` records
both so that promotion (``cspon-rs models register / promote``) can refuse a model that is not better.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cspon_rs.errors import LabelError
from cspon_rs.models.checkpoint import LoadedModel, load_checkpoint, resolve_checkpoint
from cspon_rs.training.config import (
    AugmentConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    PairSpec,
    TrainConfig,
)
from cspon_rs.training.datasets import ChangePair
from cspon_rs.training.evaluate import model_proba, select_threshold
from cspon_rs.training.loop import THRESHOLD_GRID, _save_checkpoint
from cspon_rs.training.verified import holdout_scores, read_verified_labels, split_holdout, verified_pairs

__all__ = ["FineTuneResult", "fine_tune", "score_on_holdout"]

#: Metric that decides whether a candidate beats its parent (pixel F1 on held-back verified pixels).
DECIDING_METRIC = "f1"


@dataclass
class FineTuneResult:
    """What a fine-tune round produced."""

    checkpoint: Path
    holdout_json: Path
    candidate: dict[str, Any]
    parent: dict[str, Any]
    n_train: int
    n_holdout: int
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    label_mode: str = "polygons"
    comparable: bool = True

    @property
    def better(self) -> bool:
        """True when the candidate beats the parent on the held-back verifications.

        Always False when the held-back pixels hold one class only (``--positive-only``): an F1 without any
        no-change pixel cannot see false alarms, so a model that flags everything would "win".
        """
        if not self.comparable:
            return False
        return float(self.candidate.get(DECIDING_METRIC, 0.0)) > float(self.parent.get(DECIDING_METRIC, 0.0))


#: Fewest held-back verifications on which the decision threshold is re-selected; below it the card's
#: threshold is kept (a threshold picked on a handful of polygons swings between the ends of the range).
MIN_HOLDOUT_FOR_THRESHOLD = 10


def score_on_holdout(loaded: LoadedModel, pairs: list[ChangePair]) -> dict[str, Any]:
    """Held-back scores of a model, its threshold re-selected on those pairs when there are enough of them."""
    if not pairs:
        return {"threshold": loaded.card.threshold, "verifications": 0, "threshold_from": "card"}
    probs = [model_proba(loaded.model, loaded.card, p.before, p.after, loaded.device) for p in pairs]
    threshold, source = loaded.card.threshold, "card (fewer than 10 held-back verifications)"
    if len(pairs) >= MIN_HOLDOUT_FOR_THRESHOLD:
        threshold, source = select_threshold(probs, pairs, THRESHOLD_GRID)[0], "re-selected on held-back verifications"
    return {**holdout_scores(probs, pairs, threshold), "threshold_from": source}


def _config(loaded: LoadedModel, labels: Path, scenes: list[tuple[str, str]], out_dir: Path, **kw: Any) -> TrainConfig:
    """The training config of a fine-tune round: describes the data (scene pairs + labels) for the card."""
    card = loaded.card
    crop = int(kw["crop_size"] or card.training_data.get("crop_size") or 128)
    specs = [
        PairSpec(id=f"scene{i + 1}", before=Path(b), after=Path(a), label_vector=labels)
        for i, (b, a) in enumerate(scenes)
    ]
    return TrainConfig(
        data=DataConfig(
            kind="geotiff_pairs",
            root=labels.parent,
            pairs=specs,
            crop_size=crop,
            crops_per_epoch=kw["crops_per_epoch"],
            positive_fraction=0.5,
        ),
        model=ModelConfig(architecture=card.architecture, init_kwargs=dict(card.init_kwargs)),
        augment=AugmentConfig(brightness=0.1, contrast=0.1),
        optim=OptimConfig(
            epochs=kw["epochs"],
            batch_size=kw["batch_size"],
            lr=kw["lr"],
            encoder_lr_factor=1.0,
            warmup_epochs=kw["epochs"],  # the encoder stays frozen: a few verifications adapt the decoder only
            freeze_encoder_bn=True,
            seed=kw["seed"],
            max_minutes=kw["max_minutes"],
            num_threads=kw["num_threads"],
        ),
        output=OutputConfig(
            dir=out_dir,
            name=f"{card.name}-verified",
            version=time.strftime("%Y.%m.%d.%H%M", time.gmtime()),
            notes=f"fine-tuned from {card.detector_id} on field verifications {labels.name}",
        ),
        pixel_size_m=card.pixel_size_m,
    )


def fine_tune(
    init_from: str | Path,
    labels: str | Path,
    out_dir: str | Path,
    *,
    scenes: tuple[str | Path, str | Path] | None = None,
    holdout: float = 0.3,
    seed: int = 0,
    epochs: int = 6,
    crops_per_epoch: int = 256,
    batch_size: int = 8,
    crop_size: int | None = None,
    lr: float = 1e-4,
    max_minutes: float | None = 15.0,
    num_threads: int | None = None,
    context_px: int | None = None,
    progress: bool = True,
    pixel_labels: bool = False,
    positive_only: bool = False,
) -> FineTuneResult:
    """Fine-tune ``init_from`` on verified labels; score candidate and parent on held-back verifications.

    Args:
        init_from: Parent checkpoint (path or shipped name: ``rgb``, ``s2-rgbn``).
        labels: Verified-labels GeoPackage (``cspon-rs labels export``).
        out_dir: Run folder: ``best.safetensors``/``best.json`` (threshold re-selected on the held-back
            verifications) and ``holdout.json``.
        scenes: ``(before, after)`` overriding the stored scene paths of every label.
        holdout: Share of verifications held back (stratified by label, seeded).
        epochs, crops_per_epoch, batch_size, crop_size, lr: The short schedule (crop size defaults to the
            parent's training crop). The encoder stays frozen (weights and batch-norm statistics): a county's
            few verifications adapt the decoder only.
        max_minutes: Wall-clock budget of the training loop.
        context_px: Unlabelled context read around each verified polygon (default: a quarter crop).
        pixel_labels: The pixels around each polygon (its window) are no change: the polygons map all the change
            there is. Makes one-class labels (only real change) usable: the loss and the held-back F1 then see
            false alarms.
        positive_only: Train on one-class labels with only the polygons labelled, knowingly: the held-back
            F1 cannot count false alarms, so the run never reports the candidate as better.

    Raises:
        LabelError: No usable verification, scene band count differs from the checkpoint's, or the labels hold
            one class only and neither ``pixel_labels`` nor ``positive_only`` is given.
        MissingFileError, SchemaError: Bad labels file.
    """
    t0 = time.time()
    out = Path(out_dir)
    labels_path = Path(labels).resolve()
    parent = load_checkpoint(resolve_checkpoint(init_from))
    gdf = read_verified_labels(labels_path, scenes)
    if len(gdf) == 0:
        raise LabelError(f"{labels_path}: no verified warnings to learn from (verify some warnings, export again)")
    classes = sorted({int(v) for v in gdf["label"]})
    if len(classes) < 2 and not (pixel_labels or positive_only):
        what = "real change (label 1)" if classes == [1] else "false change (label 0)"
        raise LabelError(
            f"{labels_path}: all {len(gdf)} verifications are {what}; with one class inside the polygons "
            "neither the loss nor the held-back F1 can see false alarms (a model flagging everything scores "
            "best). Pass --pixel-labels if the polygons map all the change around them (the rest of each "
            "window becomes no change), or --positive-only to train on them anyway (never reported as better)"
        )
    if pixel_labels and positive_only:
        raise LabelError("give --pixel-labels or --positive-only, not both")
    train_labels, hold_labels = split_holdout(gdf, holdout, seed)
    crop = int(crop_size or parent.card.training_data.get("crop_size") or 128)
    context = crop // 4 if context_px is None else context_px
    mode: Literal["ignore", "nochange"] = "nochange" if pixel_labels else "ignore"
    train_pairs, skipped = verified_pairs(train_labels, parent.card.bands, context_px=context, context_label=mode)
    hold_pairs, skipped_hold = verified_pairs(
        hold_labels, parent.card.bands, context_px=context, context_label=mode
    )
    skipped += skipped_hold
    if not train_pairs:
        raise LabelError(
            f"{labels_path}: none of the {len(train_labels)} training verifications is usable: {skipped[:3]}"
        )
    scene_pairs = sorted({(str(b), str(a)) for b, a in zip(gdf["scene_before"], gdf["scene_after"], strict=True)})
    config = _config(
        parent,
        labels_path,
        scene_pairs,
        out,
        crop_size=crop,
        crops_per_epoch=crops_per_epoch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        max_minutes=max_minutes,
        num_threads=num_threads,
    )
    from cspon_rs.training.loop import train

    parent_scores = score_on_holdout(parent, hold_pairs)  # scored before any training step
    result = train(config, out_dir=out, init_from=parent.path, splits=(train_pairs, [], []), progress=progress)
    candidate = load_checkpoint(result.checkpoint)
    # Without validation the loop leaves threshold 0.5; the parent's (calibrated) threshold is the fallback.
    candidate.card.threshold = parent.card.threshold
    cand_scores = score_on_holdout(candidate, hold_pairs)
    held_classes = {int(v) for p in hold_pairs for v in np.unique(p.label[p.valid])}
    comparable = len(held_classes) == 2
    label_mode = "pixel labels" if pixel_labels else ("positive only" if positive_only else "polygons")
    from cspon_rs.geo.files import file_sha256

    labels_info = {
        "path": str(labels_path),
        "sha256": file_sha256(labels_path),
        "n_train": len(train_pairs),
        "n_holdout": len(hold_pairs),
        "skipped": skipped,
        "mode": label_mode,
        "classes": classes,
    }
    card = candidate.card.model_copy(deep=True)
    card.threshold = float(cand_scores["threshold"])
    card.training_data = {**card.training_data, "verified_labels": labels_info, "parent": parent.card.detector_id}
    card.metrics = {**card.metrics, "holdout": cand_scores, "holdout_parent": parent_scores}
    _save_checkpoint(candidate.model, card, out / "best", half=True)
    report = {
        "labels": labels_info,
        "candidate": cand_scores,
        "parent": parent_scores,
        "parent_checkpoint": str(parent.path),
        "candidate_checkpoint": str((out / "best.safetensors").resolve()),
        "metric": DECIDING_METRIC,
        "comparable": comparable,
    }
    if not comparable:
        report["why_not_comparable"] = (
            "the held-back pixels hold one class only: F1 there cannot count false alarms, so neither model "
            "is preferred"
        )
    holdout_json = out / "holdout.json"
    holdout_json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return FineTuneResult(
        checkpoint=(out / "best.safetensors").resolve(),
        holdout_json=holdout_json,
        candidate=cand_scores,
        parent=parent_scores,
        n_train=len(train_pairs),
        n_holdout=len(hold_pairs),
        skipped=skipped,
        seconds=time.time() - t0,
        label_mode=label_mode,
        comparable=comparable,
    )
