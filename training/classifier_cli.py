"""``cspon-rs classifier fit``: fit a checkpoint's warning classifier on its labelled training pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

__all__ = ["fit_for_checkpoint", "load_card_pairs", "register"]


def load_card_pairs(checkpoint: str | Path, splits: tuple[str, ...] = ("train", "val"),
                    roots: dict[str, str] | None = None) -> tuple[list[Any], list[str]]:
    """The labelled pairs of a checkpoint's ``training_data`` splits (:func:`~cspon_rs.models.card_stats.card_pairs`).

    Test ids are refused unless ``splits`` is exactly ``("test",)`` (scoring, never fitting).

    Returns:
        The pairs (ids of extra sources read ``<source>/<id>``) and the ids in order.
    """
    from cspon_rs.errors import ConfigError
    from cspon_rs.models.card_stats import card_pairs
    from cspon_rs.models.checkpoint import load_card, resolve_checkpoint

    path = Path(resolve_checkpoint(str(checkpoint)))
    card = load_card(path)
    data = card.training_data
    if not any(data.get(split) for split in splits):
        raise ConfigError(f"checkpoint {card.detector_id}: its card lists no {'/'.join(splits)} pairs; give --data")
    pairs = [p for split in splits for p in card_pairs(path.with_suffix(".json"), card, split, roots)]
    leaked = sorted({str(i) for i in (data.get("test") or [])} & {p.id for p in pairs})
    if leaked and tuple(splits) != ("test",):
        raise ConfigError(f"test pairs {leaked} would be used to fit the classifier: refused")
    return pairs, [p.id for p in pairs]


def fit_for_checkpoint(
    checkpoint: str | Path,
    pairs: list[Any],
    *,
    perturbations: int = 3,
    target_precision: float | None = 0.5,
    min_recall: float | None = None,
    seed: int = 0,
    detect_config: Path | None = None,
    out: Path | None = None,
    echo: Any = print,
    folds: dict[str, Path] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Patches of ``pairs`` through ``detect`` (classifier off), fit, save beside the checkpoint, record in the
    card. Returns the classifier path and the fit report.

    ``folds`` (``{pair id: checkpoint}``, from ``cspon-rs cross-validate``) gives each pair's patches from a
    network that never saw it, at the checkpoint's threshold and radiometry: the errors the classifier will
    meet on new imagery, not the cleaner patches of pairs the network was fitted on."""
    from cspon_rs.config import load_yaml_config
    from cspon_rs.inference.classify import classifier_path_for, save_classifier
    from cspon_rs.inference.config import DetectConfig
    from cspon_rs.inference.detect import detect_pair
    from cspon_rs.models.checkpoint import load_card, resolve_checkpoint
    from cspon_rs.training.warning_classifier import collect, fit_classifier

    path = Path(resolve_checkpoint(str(checkpoint)))
    card = load_card(path)
    cfg_path = detect_config or Path(__file__).resolve().parents[1] / "configs" / "detect.yaml"
    cfg = load_yaml_config(cfg_path, DetectConfig) if cfg_path.is_file() else DetectConfig()
    kwargs = {**cfg.detect_kwargs(), "checkpoint": str(path), "classifier": "none", "progress": False,
              "workers": 1, "scheduler": None}

    def detect_with(**over: Any) -> Any:
        return lambda a, b, o: detect_pair(a, b, o, **{**kwargs, **over})

    radiometry = card.input.radiometry if card.input is not None else "none"
    detect_for = {
        pid: detect_with(checkpoint=str(ck), threshold=card.threshold, radiometry=radiometry, tile_size=card.tile_size)
        for pid, ck in (folds or {}).items()
    }
    missing = sorted({p.id for p in pairs} - set(detect_for)) if folds else []
    if missing:
        from cspon_rs.errors import ConfigError

        raise ConfigError(f"--folds has no fold network that held out {missing}; cross-validate those pairs first")
    table = collect(pairs, detect_with(), bands=card.bands, pixel_size_m=float(card.pixel_size_m or 1.0),
                    perturbations=perturbations, seed=seed, on_pair=lambda i: echo(f"patches of {i} ..."),
                    detect_for=detect_for)
    echo(f"{len(table)} patches, {int(table.touches.sum())} on labelled change; fitting ...")
    fitted = {"checkpoint": card.detector_id, "pairs": [p.id for p in pairs], "perturbations": perturbations,
              "detect_config": cfg_path.name,
              "patches_from": "out-of-fold networks (cross-validate)" if folds else "the checkpoint itself",
              "target_precision": target_precision, "min_recall": min_recall}
    clf, report = fit_classifier(table, card.bands, seed=seed, target_precision=target_precision,
                                 min_recall=min_recall, fitted=fitted)
    target = out or classifier_path_for(path)
    sha = save_classifier(clf, target)
    from cspon_rs.training.county_refit import save_shipped_patches, shipped_patches_path

    save_shipped_patches(shipped_patches_path(target), table.features, table.touches, table.group)
    if out is None:
        _record_in_card(path, target, sha, clf.min_confidence, report, fitted)
    return target, report


def _record_in_card(checkpoint: Path, clf_path: Path, sha: str, min_conf: float, report: dict[str, Any],
                    fitted: dict[str, Any]) -> None:
    from cspon_rs.exports.fileio import atomic_write_text

    card_path = checkpoint.with_suffix(".json")
    data = json.loads(card_path.read_text(encoding="utf-8"))
    data["warning_classifier"] = {
        "file": clf_path.name,
        "sha256": sha,
        "min_confidence": min_conf,
        "operating_point": {"target_precision": fitted.get("target_precision"), "min_recall": fitted.get("min_recall")},
        "fitted_on": fitted,
        "method": "LightGBM on patch features (cspon_rs.inference.features), isotonic calibration and operating "
                  "point on grouped out-of-fold scores; patches from detect on the card's train+val pairs as they "
                  f"are and under seeded radiometric/geometric perturbations, by {fitted['patches_from']}",
        "out_of_fold": {k: report["out_of_fold"][k] for k in ("all_patches", "at_operating_point", "auc")},
    }
    atomic_write_text(card_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def register(app: typer.Typer) -> None:
    """Add ``cspon-rs classifier ...``."""
    group = typer.Typer(help="The warning classifier: is a patch real change? (calibrated confidence)",
                        no_args_is_help=True)

    @group.command("fit")
    def fit(
        checkpoint: str = typer.Option(..., "--checkpoint", help="Checkpoint name (s2-rgbn, rgb) or path."),
        root: list[str] = typer.Option([], "--root", help="SOURCE=DIR: where a source of the card's training "
                                       "data lives, if not where the card says (repeatable)."),
        perturbations: int = typer.Option(3, "--perturbations", min=0, help="Seeded perturbed variants per pair."),
        target_precision: float = typer.Option(0.5, "--target-precision", min=0.0, max=1.0,
                                               help="Warning precision the operating point is chosen for "
                                               "(on out-of-fold scores); 0 = max F1."),
        min_recall: float = typer.Option(0.8, "--min-recall", min=0.0, max=1.0,
                                         help="Share of the real patches the operating point must keep out of "
                                         "fold: a --target-precision reachable only below it gives way to the "
                                         "highest confidence that keeps it; 0 = no bound."),
        seed: int = typer.Option(0, "--seed"),
        out: Path | None = typer.Option(None, "--out", help="Write here instead of beside the checkpoint "
                                        "(the card is then left as it is)."),
        report: Path | None = typer.Option(None, "--report", help="Write the fit report (JSON) here."),
        folds: Path | None = typer.Option(None, "--folds", help="A 'cspon-rs cross-validate' run folder: each "
                                          "pair's patches come from the fold network that held it out."),
    ) -> None:
        """Fit the checkpoint's warning classifier on its card's train + val pairs (never its test pairs)."""
        from cspon_rs.errors import ConfigError
        from cspon_rs.exports.fileio import write_json

        roots = {}
        for r in root:
            if "=" not in r:
                raise ConfigError(f"--root {r!r}: expected SOURCE=DIR, e.g. --root levir=../shared/data/LEVIR-CD")
            k, v = r.split("=", 1)
            roots[k] = v
        pairs, ids = load_card_pairs(checkpoint, roots=roots)
        typer.echo(f"{len(pairs)} labelled pairs: {', '.join(ids)}")
        fold_ckpts = None
        if folds is not None:
            fold_ckpts = {d.name.removeprefix("fold_"): d / "best.safetensors"
                          for d in sorted(folds.glob("fold_*")) if (d / "best.safetensors").is_file()}
            if not fold_ckpts:
                raise ConfigError(f"--folds {folds}: no fold_<id>/best.safetensors there (run cspon-rs "
                                  "cross-validate first)")
        path, rep = fit_for_checkpoint(checkpoint, pairs, perturbations=perturbations,
                                       target_precision=target_precision or None, min_recall=min_recall or None,
                                       seed=seed, out=out,
                                       echo=typer.echo, folds=fold_ckpts)
        oof = rep["out_of_fold"]
        at, base = oof["at_operating_point"], oof["all_patches"]
        typer.echo(f"classifier: {path}")
        typer.echo(f"out of fold: AUC {oof['auc']:.3f}; all {base['warnings']} patches precision "
                   f"{base['warning_precision']:.3f} recall {base['object_recall']:.3f} -> at confidence >= "
                   f"{at['min_confidence']:.2f}: {at['warnings']} patches precision {at['warning_precision']:.3f} "
                   f"recall {at['object_recall']:.3f}")
        if report is not None:
            write_json(report, rep)

    app.add_typer(group, name="classifier")
