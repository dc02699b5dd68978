"""``cspon-rs classifier fit``: fit a checkpoint's warning classifier on its labelled training pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

__all__ = ["fit_for_checkpoint", "load_card_pairs", "register"]


def _resolve_root(root: str, card_path: Path) -> Path:
    """A card's data root: as given, else relative to the working folder, else to the repository."""
    p = Path(root)
    if p.is_absolute():
        return p
    for base in (Path.cwd(), card_path.resolve().parents[2], card_path.resolve().parents[3]):
        if (base / p).exists():
            return (base / p).resolve()
    return p


def load_card_pairs(checkpoint: str | Path, splits: tuple[str, ...] = ("train", "val"),
                    roots: dict[str, str] | None = None) -> tuple[list[Any], list[str]]:
    """The labelled pairs of a checkpoint's ``training_data`` splits.

    Test ids are refused unless ``splits`` is exactly ``("test",)`` (scoring, never fitting).

    Returns:
        The pairs (ids of extra sources read ``<source>/<id>``) and the ids in order.
    """
    from cspon_rs.errors import ConfigError
    from cspon_rs.models.checkpoint import load_card, resolve_checkpoint
    from cspon_rs.training.datasets import load_levir, load_oscd

    path = Path(resolve_checkpoint(str(checkpoint)))
    card = load_card(path)
    data = card.training_data
    sources = data.get("sources") or [{"name": "main", "kind": data.get("kind"), "root": data.get("root")}]
    ids = [str(i) for split in splits for i in (data.get(split) or [])]
    test = {str(i) for i in (data.get("test") or [])}
    if not ids:
        raise ConfigError(f"checkpoint {card.detector_id}: its card lists no {'/'.join(splits)} pairs; give --data")
    pairs = []
    for k, src in enumerate(sources):
        prefix = "" if k == 0 else f"{src['name']}/"
        own = [i[len(prefix):] for i in ids if (i.startswith(prefix) if prefix else "/" not in i)]
        if not own:
            continue
        root = (roots or {}).get(src["name"]) or _resolve_root(str(src["root"]), path)
        if not Path(root).exists():
            raise ConfigError(f"checkpoint {card.detector_id}: data source {src['name']!r} not found at {root}; "
                              f"give --root {src['name']}=DIR")
        loaded = load_oscd(root, own, bands=card.bands) if src["kind"] == "oscd" else load_levir(root, own)
        for p in loaded:
            p.id = prefix + p.id
        pairs += loaded
    leaked = sorted(test & {p.id for p in pairs})
    if leaked and tuple(splits) != ("test",):
        raise ConfigError(f"test pairs {leaked} would be used to fit the classifier: refused")
    return pairs, [p.id for p in pairs]


def fit_for_checkpoint(
    checkpoint: str | Path,
    pairs: list[Any],
    *,
    perturbations: int = 3,
    target_precision: float | None = 0.5,
    seed: int = 0,
    detect_config: Path | None = None,
    out: Path | None = None,
    echo: Any = print,
) -> tuple[Path, dict[str, Any]]:
    """Patches of ``pairs`` through ``detect`` (classifier off), fit, save beside the checkpoint, record in the
    card. Returns the classifier path and the fit report."""
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

    def detect(a: Path, b: Path, o: Path) -> Any:
        return detect_pair(a, b, o, **kwargs)

    table = collect(pairs, detect, bands=card.bands, pixel_size_m=float(card.pixel_size_m or 1.0),
                    perturbations=perturbations, seed=seed, on_pair=lambda i: echo(f"patches of {i} ..."))
    echo(f"{len(table)} patches, {int(table.touches.sum())} on labelled change; fitting ...")
    fitted = {"checkpoint": card.detector_id, "pairs": [p.id for p in pairs], "perturbations": perturbations,
              "detect_config": cfg_path.name}
    clf, report = fit_classifier(table, card.bands, seed=seed, target_precision=target_precision, fitted=fitted)
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
        "fitted_on": fitted,
        "method": "LightGBM on patch features (cspon_rs.inference.features), isotonic calibration and operating "
                  "point on grouped out-of-fold scores; patches from detect on the card's train+val pairs as they "
                  "are and under seeded radiometric/geometric perturbations",
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
        seed: int = typer.Option(0, "--seed"),
        out: Path | None = typer.Option(None, "--out", help="Write here instead of beside the checkpoint "
                                        "(the card is then left as it is)."),
        report: Path | None = typer.Option(None, "--report", help="Write the fit report (JSON) here."),
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
        path, rep = fit_for_checkpoint(checkpoint, pairs, perturbations=perturbations,
                                       target_precision=target_precision or None, seed=seed, out=out,
                                       echo=typer.echo)
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
