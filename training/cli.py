"""CLI commands of this area (registered by cspon_rs.cli): ``train``, ``cross-validate``, ``export-checkpoint``,
``evaluate``, ``calibrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _fine_tune_cmd(
    labels: Path,
    init_from: Path | None,
    out: Path | None,
    scenes: str | None,
    holdout: float,
    epochs: int | None,
    max_minutes: float | None,
    lr: float | None = None,
    pixel_labels: bool = False,
    positive_only: bool = False,
) -> None:
    """``cspon-rs train --labels``: one fine-tune round on field verifications."""
    from cspon_rs.errors import ConfigError
    from cspon_rs.training.finetune import fine_tune

    if init_from is None or out is None:
        raise ConfigError("--labels needs --init-from CHECKPOINT (or rgb / s2-rgbn) and --out RUN_FOLDER")
    pair = None
    if scenes is not None:
        parts = [p.strip() for p in scenes.split(",") if p.strip()]
        if len(parts) != 2:
            raise ConfigError(f"--scenes must be BEFORE.tif,AFTER.tif, got {scenes!r}")
        pair = (parts[0], parts[1])
    kw: dict[str, object] = {
        "scenes": pair,
        "holdout": holdout,
        "pixel_labels": pixel_labels,
        "positive_only": positive_only,
    }
    if epochs is not None:
        kw["epochs"] = epochs
    if max_minutes is not None:
        kw["max_minutes"] = max_minutes
    if lr is not None:
        kw["lr"] = lr
    result = fine_tune(init_from, labels, out, **kw)  # type: ignore[arg-type]
    for line in result.skipped:
        typer.echo(f"skipped: {line}", err=True)
    c, p = result.candidate, result.parent
    typer.echo(f"trained on {result.n_train} verifications, {result.n_holdout} held back ({result.seconds:.0f} s)")
    for name, s in (("fine-tuned", c), ("parent", p)):
        if s.get("verifications"):
            typer.echo(
                f"{name:<10} held-back F1 {s['f1']:.3f}, warning precision {s['warning_precision']:.2f} "
                f"({s['raised']} raised, {s['false_kept']} false), threshold {s['threshold']:.2f}"
            )
    if not result.comparable:
        typer.echo(
            f"cannot tell whether it is better than the parent ({result.label_mode}): the held-back pixels hold "
            "one class only, so F1 there cannot count false alarms"
        )
    else:
        typer.echo(f"{'better' if result.better else 'NOT better'} than the parent on held-back verifications")
    typer.echo(f"checkpoint: {result.checkpoint}\nscores: {result.holdout_json}")


def register(app: typer.Typer) -> None:
    """Add this area's subcommands to ``app``."""
    from cspon_rs.training.project_cli import register as register_project

    register_project(app)  # dataset init, config schema

    @app.command("train")
    def train_cmd(
        config: Annotated[
            Path | None,
            typer.Option("--config", "-c", help="Training YAML, e.g. configs/train_rgb.yaml (not with --labels)"),
        ] = None,
        pairs: Annotated[
            Path | None,
            typer.Option(
                "--pairs",
                help="CSV of GeoTIFF pairs (before, after, label[, split, pixel_size]) instead of a YAML config; "
                "write one with 'cspon-rs dataset init DIR'",
            ),
        ] = None,
        dataset: Annotated[
            str | None,
            typer.Option(
                "--dataset",
                help="A standard dataset by name with its official splits (levir-cd, levir-cd+, whu-cd, s2looking, "
                "sysu-cd, cdd, dsifn, oscd, oscd-13); needs --root",
            ),
        ] = None,
        root: Annotated[
            Path | None, typer.Option("--root", help="With --dataset: the dataset folder as downloaded")
        ] = None,
        sets: Annotated[
            list[str] | None,
            typer.Option(
                "--set",
                help="Override any config field: KEY=VALUE with a dotted key and a YAML value, e.g. "
                "optim.epochs=3 (repeat; reference: cspon-rs config schema)",
            ),
        ] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue from <out>/last.pt")] = False,
        init_from: Annotated[
            Path | None,
            typer.Option("--init-from", help="Checkpoint to fine-tune from: a .safetensors path, rgb or s2-rgbn"),
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", help="Run folder (default: output.dir of the config)")
        ] = None,
        epochs: Annotated[int | None, typer.Option("--epochs", help="Override optim.epochs")] = None,
        max_epochs: Annotated[
            int | None,
            typer.Option("--max-epochs", help="Stop after this many finished epochs (continue later with --resume)"),
        ] = None,
        device: Annotated[
            str | None, typer.Option("--device", help="Override optim.device: auto, cpu or cuda")
        ] = None,
        max_minutes: Annotated[
            float | None, typer.Option("--max-minutes", help="Override optim.max_minutes (wall-clock budget)")
        ] = None,
        workers: Annotated[
            int | None, typer.Option("--workers", help="Override optim.loader_workers (batch-drawing processes)")
        ] = None,
        pack: Annotated[
            Path | None,
            typer.Option("--pack", help="Train from a pack made by 'cspon-rs pack-data' (no GDAL needed)"),
        ] = None,
        labels: Annotated[
            Path | None,
            typer.Option("--labels", help="Fine-tune --init-from on verified warnings (cspon-rs labels export)"),
        ] = None,
        scenes: Annotated[
            str | None,
            typer.Option("--scenes", help="BEFORE.tif,AFTER.tif for every label instead of the stored scene paths"),
        ] = None,
        holdout: Annotated[
            float, typer.Option("--holdout", help="Share of verifications held back to score and pick the threshold")
        ] = 0.3,
        lr: Annotated[
            float | None,
            typer.Option("--lr", help="Learning rate (overrides optim.lr; with --labels default 1e-4)"),
        ] = None,
        pixel_labels: Annotated[
            bool,
            typer.Option(
                "--pixel-labels",
                help="With --labels: the polygons map all the change around them; the rest of each window is no "
                "change (needed for one-class labels)",
            ),
        ] = False,
        positive_only: Annotated[
            bool,
            typer.Option(
                "--positive-only",
                help="With --labels: train on one-class labels (only real change) anyway; never reported as better",
            ),
        ] = False,
    ) -> None:
        """Train a change-detection model; writes best.safetensors/.json, last.pt, history.json, curves.png.

        With --labels (and --init-from, --out): fine-tune on a county's field verifications; pixels outside
        verified polygons are ignored by the loss; the parent and the new model are both scored on held-back
        verifications (threshold re-selected there) and <out>/holdout.json records both for promotion.
        """
        from cspon_rs.errors import ConfigError

        if labels is not None:
            _fine_tune_cmd(
                labels, init_from, out, scenes, holdout, epochs, max_minutes, lr, pixel_labels, positive_only
            )
            return
        if sum(x is not None for x in (config, pairs, dataset)) != 1:
            raise ConfigError(
                "give one of --config (a training YAML), --pairs (a pairs CSV) or --dataset NAME --root DIR, "
                "or --labels with --init-from to fine-tune"
            )
        from cspon_rs.training.loop import train

        if dataset is not None:
            from cspon_rs.training.standard import config_from_dataset

            if root is None:
                raise ConfigError(f"--dataset {dataset} needs --root DIR (the dataset folder as downloaded)")
            cfg = config_from_dataset(dataset, root, sets or [])
        elif pairs is not None:
            from cspon_rs.training.pairs_csv import config_from_pairs_csv

            cfg = config_from_pairs_csv(pairs, sets or [])
        else:
            from cspon_rs.training.config import load_train_config

            assert config is not None
            cfg = load_train_config(config, sets=sets or [])
        if epochs is not None:
            cfg.optim.epochs = epochs
        from pydantic import ValidationError

        from cspon_rs.config import format_validation_error
        from cspon_rs.errors import ConfigError

        try:  # StrictModel validates assignments: a bad value names the option
            if device is not None:
                cfg.optim.device = device  # type: ignore[assignment]
            if max_minutes is not None:
                cfg.optim.max_minutes = max_minutes
            if workers is not None:
                cfg.optim.loader_workers = workers
            if lr is not None:
                cfg.optim.lr = lr
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "command-line option")) from exc
        result = train(cfg, out_dir=out, resume=resume, init_from=init_from, max_epochs=max_epochs, pack=pack)
        if not result.main_process:  # torchrun: process 0 reports
            return
        typer.echo(
            f"best epoch {result.best_epoch} (validation score {result.best_score:.4f}), "
            f"threshold {result.threshold:.2f}"
        )
        if result.parent_val:
            pv = result.parent_val
            delta = result.best_score - float(pv["score"])
            verdict = "WORSE than the parent" if result.worse_than_parent else "better than the parent"
            typer.echo(
                f"validation {pv['selected_on']}: parent {pv['checkpoint']} {pv['score']:.3f}, fine-tuned "
                f"{result.best_score:.3f} ({delta:+.3f}): {verdict}"
                + ("; keep the parent, or try a lower --lr / fewer epochs" if result.worse_than_parent else "")
            )
        if result.test_metrics:
            m = result.test_metrics
            typer.echo(
                f"test {m['pairs']}: P {m['precision']:.3f} R {m['recall']:.3f} F1 {m['f1']:.3f} "
                f"IoU {m['iou']:.3f} kappa {m['kappa']:.3f}"
            )
        typer.echo(f"checkpoint: {result.checkpoint}")

    @app.command("cross-validate")
    def cross_validate_cmd(
        config: Annotated[Path, typer.Option("--config", "-c", help="Training YAML, e.g. configs/train_s2_rgbn.yaml")],
        out: Annotated[Path, typer.Option("--out", help="Run folder: fold_<id>/, cv.json, cv.md, final/")],
        epochs: Annotated[int | None, typer.Option("--epochs", help="Override optim.epochs (every fold)")] = None,
        sets: Annotated[
            list[str] | None, typer.Option("--set", help="Override any config field: KEY=VALUE (repeat)")
        ] = None,
        final: Annotated[
            bool, typer.Option("--final/--no-final", help="Then train the recipe on every pair (final/)")
        ] = True,
    ) -> None:
        """Leave-one-pair-out cross-validation: one network per held-out train/val pair (an OSCD city), honest
        per-pair figures, the radiometry and threshold chosen out of fold, then the final model on every pair.

        Folds already trained are kept (run it again to continue). Test pairs are never read.
        """
        from cspon_rs.exports.fileio import write_json
        from cspon_rs.training.config import load_train_config
        from cspon_rs.training.cross_validate import out_of_fold, run_folds, train_final

        cfg = load_train_config(config, sets=sets or [])
        run_folds(cfg, out, epochs=epochs, echo=typer.echo)
        cv = out_of_fold(cfg, out)
        chosen = cv.radiometry
        write_json(out / "cv.json", {"radiometry": chosen, "methods": {m: f.as_dict() for m, f in cv.figures.items()},
                                     "calibration": cv.calibration})
        text = "\n\n".join(f"### radiometry `{m}`{' (chosen)' if m == chosen else ''}: mean F1 {f.mean_f1:.3f}"
                             f"\n\n{f.table()}" for m, f in cv.figures.items())
        (out / "cv.md").write_text(text + "\n", encoding="utf-8")
        typer.echo(text)
        typer.echo(f"out-of-fold figures: {out / 'cv.json'}, {out / 'cv.md'}")
        if final:
            ckpt = train_final(cfg, out, cv, epochs=epochs)
            typer.echo(f"final model on every pair: {ckpt} (radiometry {chosen}; out of fold: temperature "
                       f"{cv.calibration['temperature']:.3f}, threshold {cv.calibration['threshold']:.2f})")

    @app.command("pack-data")
    def pack_cmd(
        config: Annotated[Path, typer.Option("--config", "-c", help="Training YAML whose data to pack")],
        out: Annotated[Path, typer.Option("--out", help="Output .npz")],
        splits: Annotated[
            str, typer.Option("--splits", help="Comma-separated splits to include (test is left out by default)")
        ] = "train,val",
    ) -> None:
        """Load a config's training pairs and synthetic hosts into one .npz, to train where GDAL is absent."""
        from cspon_rs.training.config import load_train_config
        from cspon_rs.training.datasets import make_pack

        cfg = load_train_config(config)
        path = make_pack(cfg.data, out, [s.strip() for s in splits.split(",") if s.strip()])
        typer.echo(f"pack: {path} ({path.stat().st_size / 1e6:.1f} MB)")

    @app.command("export-checkpoint")
    def export_cmd(
        config: Annotated[Path, typer.Option("--config", "-c", help="The run's training YAML")],
        run: Annotated[Path, typer.Option("--run", help="Run folder with best.safetensors/best.json")],
        to: Annotated[Path, typer.Option("--to", help="Destination stem, e.g. models/checkpoints/my_model")],
        tile_size: Annotated[
            int | None, typer.Option("--tile-size", help="Inference window (px) to record in the card")
        ] = None,
    ) -> None:
        """Export a run's best checkpoint (float16) with test-split metrics added to its card."""
        from cspon_rs.training.config import load_train_config
        from cspon_rs.training.loop import export_best

        card = export_best(load_train_config(config), run, to, tile_size=tile_size)
        test = card.metrics.get("test")
        typer.echo(f"exported {to}.safetensors/.json" + (f" (test F1 {test['f1']:.3f})" if test else ""))

    @app.command("evaluate")
    def evaluate_cmd(
        checkpoint: Annotated[
            str,
            typer.Option(
                "--checkpoint",
                help="Checkpoint path, 'default' (the shipped one), or a baseline: 'spectral' (CVA + Otsu), "
                "'all-change' (flags every pixel) or 'random' (untrained network)",
            ),
        ],
        data: Annotated[
            Path | None,
            typer.Option("--data", help="Labelled data: OSCD/LEVIR folder, pair folder or train_*.yaml"),
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", help="Folder for report.json and PNG panels")
        ] = None,
        ids: Annotated[str | None, typer.Option("--ids", help="Comma-separated pair ids/cities")] = None,
        split: Annotated[str, typer.Option("--split", help="Split of a YAML config")] = "test",
        label_threshold: Annotated[
            int | None,
            typer.Option("--label-threshold", help="Binarise labels as change = value > this (e.g. 127)"),
        ] = None,
        threshold: Annotated[
            float | None, typer.Option("--threshold", help="Override the decision threshold")
        ] = None,
        like: Annotated[
            Path | None, typer.Option("--like", help="Reference checkpoint for 'random' and for band names")
        ] = None,
        min_overlap: Annotated[
            float, typer.Option("--min-overlap", help="Object hit: min share of pixels")
        ] = 0.0,
        before: Annotated[
            list[Path] | None,
            typer.Option(
                "--before",
                help="Unlabelled pair, date 1 (repeat with --after for several pairs): reports patches and "
                "flagged area per km² only",
            ),
        ] = None,
        after: Annotated[
            list[Path] | None, typer.Option("--after", help="Unlabelled pair, date 2 (one per --before)")
        ] = None,
        min_area_m2: Annotated[
            float | None,
            typer.Option("--min-area-m2", help="Minimum mapping unit (m²); default: detect's (configs/detect.yaml: "
                         "auto = clip(7 px, 50, 700) m²), 0 for --pipeline pixels"),
        ] = None,
        pipeline: Annotated[
            str,
            typer.Option("--pipeline", help="detect (default): score what `cspon-rs detect` delivers (radiometry, "
                         "MMU, suppression, classifier); pixels: the raw network mask and its components"),
        ] = "detect",
        detect_config: Annotated[
            Path | None, typer.Option("--detect-config", help="detect settings (default configs/detect.yaml)")
        ] = None,
        radiometry: Annotated[
            str | None,
            typer.Option("--radiometry", help="Per-scene normalisation for --pipeline detect: card (default) | none | "
                         "gain | standardize | percentile | relative"),
        ] = None,
        pixel_size: Annotated[
            float | None,
            typer.Option(
                "--pixel-size",
                help="Pixel size (m) of pairs without georeferencing (default: the checkpoint card's)",
            ),
        ] = None,
        json_path: Annotated[
            Path | None, typer.Option("--json", help="Write every figure (pooled and per pair) to this JSON file")
        ] = None,
    ) -> None:
        """Score a checkpoint or a baseline: pixel metrics, predicted patches (warnings) and calibration.

        On labelled pairs: pooled pixel P/R/F1/IoU/kappa, object recall, ECE, and for the predicted patches
        (8-connected components of the thresholded prediction) their number, warning precision (share
        touching labelled change), top-10/20/50 precision by confidence, recall of labelled objects and
        patches per km². With --before/--after (no labels): patches and flagged area per km².
        """
        from cspon_rs.errors import ConfigError, LabelError
        from cspon_rs.exports.fileio import write_json
        from cspon_rs.models.checkpoint import default_checkpoint, load_card, resolve_checkpoint
        from cspon_rs.training.datasets import load_pairs_from
        from cspon_rs.training.evaluate import (
            BASELINES,
            evaluate,
            evaluate_unlabelled,
            load_unlabelled_pair,
        )

        if checkpoint not in BASELINES:
            checkpoint = str(resolve_checkpoint(checkpoint))  # "default" = the shipped checkpoint
        settings: Any = detect_config
        if radiometry is not None:
            from pydantic import ValidationError

            from cspon_rs.config import format_validation_error
            from cspon_rs.training.evaluate import detect_settings

            settings = detect_settings(detect_config)
            try:
                settings = settings.model_validate({**settings.model_dump(), "radiometry": radiometry})
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, "--radiometry")) from exc
        ref = checkpoint if checkpoint not in BASELINES else (like or default_checkpoint())
        card = load_card(ref)
        befores, afters = list(before or []), list(after or [])
        if befores or afters:
            if len(befores) != len(afters):
                raise ConfigError(
                    f"give one --after per --before (got {len(befores)} --before, {len(afters)} --after)"
                )
            if data is not None:
                raise ConfigError("give either --data (labelled pairs) or --before/--after (unlabelled), not both")
            pairs = [load_unlabelled_pair(a, b, card.bands) for a, b in zip(befores, afters, strict=True)]
            unlabelled = evaluate_unlabelled(
                checkpoint, pairs, threshold=threshold, like=like, min_area_m2=min_area_m2, pixel_size_m=pixel_size,
                pipeline=pipeline, detect_config=settings,  # type: ignore[arg-type]
            )
            if json_path is not None:
                typer.echo(f"figures: {write_json(json_path, unlabelled.as_dict())}")
            return
        if data is None:
            raise ConfigError("give --data (labelled pairs) or --before/--after (an unlabelled pair)")
        pairs = load_pairs_from(
            data, bands=card.bands, ids=ids.split(",") if ids else None, split=split, label_threshold=label_threshold
        )
        if not pairs:
            raise LabelError(f"{data}: no labelled pairs selected (ids={ids}, split={split})")
        report = evaluate(
            checkpoint,
            pairs,
            out_dir=out,
            threshold=threshold,
            like=like,
            min_overlap=min_overlap,
            min_area_m2=min_area_m2,
            pixel_size_m=pixel_size,
            pipeline=pipeline,  # type: ignore[arg-type]
            detect_config=settings,
        )
        if out is not None:
            typer.echo(f"report: {out / 'report.json'}  (F1 {report.metrics.f1:.3f})")
        if json_path is not None:
            typer.echo(f"figures: {write_json(json_path, report.as_dict())}")

    @app.command("calibrate")
    def calibrate_cmd(
        checkpoint: Annotated[
            str, typer.Option("--checkpoint", help="Checkpoint (.safetensors/.json/stem) or 'default'")
        ],
        data: Annotated[
            Path, typer.Option("--data", help="Validation data: OSCD/LEVIR folder, pair folder or train_*.yaml")
        ],
        ids: Annotated[
            str | None, typer.Option("--ids", help="Comma-separated validation pair ids/cities")
        ] = None,
        split: Annotated[str, typer.Option("--split", help="Split of a YAML config")] = "val",
        label_threshold: Annotated[
            int | None,
            typer.Option("--label-threshold", help="Binarise labels as change = value > this (e.g. 127)"),
        ] = None,
        allow_test: Annotated[
            bool,
            typer.Option("--allow-test", help="Allow pairs that the card names as its test split (not advised)"),
        ] = False,
    ) -> None:
        """Fit the probability temperature on validation pairs and re-select the threshold.

        Writes the updated card next to the weights (atomically; the old card is kept as <stem>.json.bak).
        """
        import shutil

        from cspon_rs.errors import ConfigError, LabelError
        from cspon_rs.exports.fileio import atomic_write_text
        from cspon_rs.models.calibration import calibrate_checkpoint
        from cspon_rs.models.checkpoint import checkpoint_paths, load_card, resolve_checkpoint
        from cspon_rs.training.datasets import load_pairs_from

        weights = resolve_checkpoint(checkpoint)
        _, card_path = checkpoint_paths(weights)
        old = load_card(weights)
        pairs = load_pairs_from(
            data, bands=old.bands, ids=ids.split(",") if ids else None, split=split, label_threshold=label_threshold
        )
        if not pairs:
            raise LabelError(f"{data}: no labelled pairs selected (ids={ids}, split={split})")
        test_ids = {str(t) for t in old.training_data.get("test", []) or []}
        on_test = sorted(p.id for p in pairs if p.id in test_ids)
        if on_test and not allow_test:
            raise ConfigError(
                f"{on_test} are in the test split of {old.detector_id}; calibrate on validation pairs "
                "(or pass --allow-test)"
            )
        card = calibrate_checkpoint(weights, pairs)
        cal = card.metrics["calibration"]
        backup = card_path.with_name(card_path.name + ".bak")
        shutil.copy2(card_path, backup)
        atomic_write_text(card_path, card.model_dump_json(indent=2) + "\n")
        load_card(card_path)  # the written card is valid
        typer.echo(f"calibrated {old.detector_id} on {', '.join(cal['pairs'])} ({cal['pixels']:,} pixels)")
        typer.echo(f"temperature T = {card.temperature:.4f} (was {old.temperature:g})")
        typer.echo(f"ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f}")
        typer.echo(
            f"threshold {old.threshold:.2f} -> {card.threshold:.2f} "
            f"(validation F1 {cal['f1_at_threshold']:.3f} at the calibrated threshold)"
        )
        typer.echo(f"card: {card_path} (previous card kept as {backup.name})")
