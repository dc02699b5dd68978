"""CLI commands for training without YAML and sharing models: ``dataset init``, ``config schema`` and
``export-onnx`` (registered by :mod:`cspon_rs.training.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``dataset`` and ``config`` command groups to ``app``."""
    dataset_app = typer.Typer(help="Describe a folder of GeoTIFF pairs for training (pairs.csv + config).")
    config_app = typer.Typer(help="The training config: field reference.")

    @dataset_app.command("init")
    def init_cmd(
        folder: Annotated[Path, typer.Argument(help="Folder with the GeoTIFF pairs")],
        labels: Annotated[
            Path | None, typer.Option("--labels", help="Change polygons (GeoPackage, any CRS) for every pair")
        ] = None,
        split: Annotated[
            str | None,
            typer.Option(
                "--split",
                help="pairs (whole pairs at random), random (blocks at random) or blocks (contiguous stripes of "
                "each scene: train | val | test); default: pairs with 5+ pairs, else blocks",
            ),
        ] = None,
        val: Annotated[float, typer.Option("--val", help="Share for validation")] = 0.2,
        test: Annotated[float, typer.Option("--test", help="Share for the test split")] = 0.1,
        window: Annotated[int, typer.Option("--window", help="Block edge (px) for random/blocks splits")] = 512,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the random assignment")] = 0,
    ) -> None:
        """Find the pairs in FOLDER, split them and write FOLDER/pairs.csv and FOLDER/train.yaml."""
        from cspon_rs.errors import ConfigError
        from cspon_rs.training.dataset_init import init_dataset

        if split not in (None, "pairs", "random", "blocks"):
            raise ConfigError(f"--split must be pairs, random or blocks, got {split!r}")
        csv_path, config_path, rows = init_dataset(
            folder, labels=labels, split=split, val=val, test=test, window=window, seed=seed  # type: ignore[arg-type]
        )
        counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
        typer.echo(
            f"{len(rows)} rows (train {counts['train']}, val {counts['val']}, test {counts['test']}): {csv_path}"
        )
        typer.echo(f"config: {config_path}")
        typer.echo(f"next: cspon-rs train --pairs {csv_path} --out runs/my_model  (--init-from s2-rgbn or rgb)")

    @config_app.command("schema")
    def schema_cmd(
        fmt: Annotated[str, typer.Option("--format", help="md (field reference) or json (JSON Schema)")] = "md",
        out: Annotated[Path | None, typer.Option("--out", help="Write to this file instead of stdout")] = None,
    ) -> None:
        """Print the field reference of the training config (generated from the pydantic models)."""
        from cspon_rs.errors import ConfigError
        from cspon_rs.training.provenance import atomic_write_text
        from cspon_rs.training.schema_doc import config_reference, config_schema_json

        if fmt not in ("md", "json"):
            raise ConfigError(f"--format must be md or json, got {fmt!r}")
        text = config_reference() if fmt == "md" else config_schema_json()
        if out is None:
            typer.echo(text, nl=False)
        else:
            typer.echo(f"written: {atomic_write_text(out, text)}")

    @app.command("export-onnx")
    def export_onnx_cmd(
        checkpoint: Annotated[str, typer.Argument(help="Checkpoint .safetensors (or rgb / s2-rgbn)")],
        out: Annotated[Path, typer.Argument(help="Output .onnx file (its card is written as <out>.json)")],
        precision: Annotated[str, typer.Option("--precision", help="fp32 or int8 (dynamic quantisation)")] = "fp32",
        tile: Annotated[int, typer.Option("--tile", help="Edge (px) of the window checked against PyTorch")] = 128,
    ) -> None:
        """Export a checkpoint to ONNX (inputs: normalised before/after windows; output: change logits) and
        check it against PyTorch on a window."""
        from cspon_rs.models.onnx_export import export_checkpoint_onnx

        onnx_path, card_path, diff = export_checkpoint_onnx(checkpoint, out, precision=precision, tile=tile)  # type: ignore[arg-type]
        typer.echo(f"onnx: {onnx_path}  card: {card_path}")
        typer.echo(f"checked against PyTorch on a {tile} px window: max |logit difference| {diff:.2e}")

    app.add_typer(dataset_app, name="dataset")
    app.add_typer(config_app, name="config")
