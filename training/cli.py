"""CLI commands of this area (registered by cspon_rs.cli): ``train`` and ``evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this area's subcommands to ``app``."""

    @app.command("train")
    def train_cmd(
        config: Annotated[
            Path, typer.Option("--config", "-c", help="Training YAML, e.g. configs/train_oscd_rgbn_lite.yaml")
        ],
        resume: Annotated[bool, typer.Option("--resume", help="Continue from <out>/last.pt")] = False,
        init_from: Annotated[
            Path | None, typer.Option("--init-from", help="Checkpoint (.safetensors) to fine-tune from")
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", help="Run folder (default: output.dir of the config)")
        ] = None,
        epochs: Annotated[int | None, typer.Option("--epochs", help="Override optim.epochs")] = None,
        max_epochs: Annotated[
            int | None,
            typer.Option("--max-epochs", help="Stop after this many finished epochs (continue later with --resume)"),
        ] = None,
    ) -> None:
        """Train a change-detection model; writes best.safetensors/.json, last.pt, history.json, curves.png."""
        from cspon_rs.training.config import load_train_config
        from cspon_rs.training.loop import train

        cfg = load_train_config(config)
        if epochs is not None:
            cfg.optim.epochs = epochs
        result = train(cfg, out_dir=out, resume=resume, init_from=init_from, max_epochs=max_epochs)
        typer.echo(
            f"best epoch {result.best_epoch} (validation score {result.best_score:.4f}), "
            f"threshold {result.threshold:.2f}"
        )
        if result.test_metrics:
            m = result.test_metrics
            typer.echo(
                f"test {m['pairs']}: P {m['precision']:.3f} R {m['recall']:.3f} F1 {m['f1']:.3f} "
                f"IoU {m['iou']:.3f} kappa {m['kappa']:.3f}"
            )
        typer.echo(f"checkpoint: {result.checkpoint}")

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
                "--checkpoint", help="Checkpoint path, 'default' (the shipped one), 'spectral' or 'random'"
            ),
        ],
        data: Annotated[Path, typer.Option("--data", help="OSCD/LEVIR folder, pair folder or train_*.yaml")],
        out: Annotated[
            Path | None, typer.Option("--out", help="Folder for report.json and PNG panels")
        ] = None,
        ids: Annotated[str | None, typer.Option("--ids", help="Comma-separated pair ids/cities")] = None,
        split: Annotated[str, typer.Option("--split", help="Split of a YAML config")] = "test",
        threshold: Annotated[
            float | None, typer.Option("--threshold", help="Override the decision threshold")
        ] = None,
        like: Annotated[
            Path | None, typer.Option("--like", help="Reference checkpoint for 'random' and for band names")
        ] = None,
        min_overlap: Annotated[
            float, typer.Option("--min-overlap", help="Object hit: min share of pixels")
        ] = 0.0,
    ) -> None:
        """Score a checkpoint or a baseline on labelled pairs (pooled pixel metrics + object recall)."""
        from cspon_rs.models.checkpoint import default_checkpoint, load_card, resolve_checkpoint
        from cspon_rs.training.datasets import load_pairs_from
        from cspon_rs.training.evaluate import evaluate

        if checkpoint not in ("spectral", "random"):
            checkpoint = str(resolve_checkpoint(checkpoint))  # "default" = the shipped checkpoint
        ref = checkpoint if checkpoint not in ("spectral", "random") else (like or default_checkpoint())
        card = load_card(ref)
        pairs = load_pairs_from(data, bands=card.bands, ids=ids.split(",") if ids else None, split=split)
        if not pairs:
            from cspon_rs.errors import LabelError

            raise LabelError(f"{data}: no labelled pairs selected (ids={ids}, split={split})")
        report = evaluate(
            checkpoint, pairs, out_dir=out, threshold=threshold, like=like, min_overlap=min_overlap
        )
        if out is not None:
            typer.echo(f"report: {out / 'report.json'}  (F1 {report.metrics.f1:.3f})")
