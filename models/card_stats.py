"""Fill in a checkpoint card's input contract: training-data statistics and the default radiometry.

Two steps, both reproducible from ``../shared/data`` (paths in the card's ``training_data``)::

    python -m cspon_rs.models.card_stats stats  models/checkpoints/s2_rgbn_effl0_siamunet.json
    python -m cspon_rs.models.card_stats select models/checkpoints/s2_rgbn_effl0_siamunet.json

``stats`` pools the valid pixels of both dates of the card's train + val pairs and stores, per band, the
values at :data:`~cspon_rs.models.card.QUANTILE_LEVELS`, mean and std, plus dtype and value range.
``select`` scores every radiometric normalisation of :mod:`cspon_rs.inference.radiometry` on the card's
**validation** pairs (raw, x 10 and / 100) and its training pairs (never its test pairs) and writes the best
gain-invariant one as the card's default, with the figures. The weights (.safetensors) are never touched;
only the card's ``input`` key is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from cspon_rs.models.card import QUANTILE_LEVELS, BandStats, InputContract, ModelCard

__all__ = ["card_pairs", "compute_contract", "contract_from_pairs", "main", "score_methods", "select_radiometry"]

#: dtype, nominal range and units of the training products, by the card's ``training_data.kind``.
_PRODUCTS: dict[str, tuple[str, tuple[float, float], str]] = {
    "oscd": ("uint16", (0.0, 10000.0), "Sentinel-2 L1C top-of-atmosphere reflectance x 10000"),
    "levir": ("uint8", (0.0, 255.0), "8-bit RGB (Google Earth / aerial)"),
}


def _root(card_path: Path, root: str) -> Path:
    """Resolve a ``training_data`` root: as given if absolute, else relative to the repository (the card's
    grandparent, or the one above for a run folder), else the cwd."""
    here = card_path.resolve()
    bases = [here.parents[2], Path.cwd()] + ([here.parents[3]] if len(here.parents) > 3 else [])
    for base in bases:
        p = (base / root).resolve()
        if p.exists():
            return p
    return (bases[0] / root).resolve()


def card_pairs(card_path: Path, card: ModelCard, split: str, roots: dict[str, str] | None = None) -> list[Any]:
    """Load the card's pairs of ``split`` (``train``, ``val``) from the roots in its ``training_data``.

    Args:
        roots: ``{source name: folder}`` where a source lives if not where the card says.

    Raises:
        ConfigError: A source's folder does not exist (the message names the ``--root`` to give).
    """
    from cspon_rs.errors import ConfigError
    from cspon_rs.training.datasets import load_levir, load_oscd

    td = card.training_data
    ids = [str(i) for i in td.get(split, []) or []]
    sources = {s["name"]: s for s in td.get("sources", [])} or {"main": {"kind": td["kind"], "root": td["root"]}}
    pairs = []
    by_source: dict[str, list[str]] = {}
    first = next(iter(sources))
    for i in ids:
        name, _, pid = i.partition("/") if "/" in i else (first, "", i)
        by_source.setdefault(name, []).append(pid)
    for name, pids in by_source.items():
        src = sources[name]
        root = Path((roots or {}).get(name) or _root(card_path, src["root"]))
        if not root.exists():
            raise ConfigError(f"checkpoint {card.detector_id}: data source {name!r} not found at {root}; "
                              f"give --root {name}=DIR")
        if src["kind"] == "oscd":
            pairs += load_oscd(root, pids, card.bands)
        else:
            loaded = load_levir(root, pids)
            for p in loaded:
                p.id = p.id if name == first else f"{name}/{p.id}"
            pairs += loaded
    return pairs


def compute_contract(card_path: Path, card: ModelCard, old: InputContract | None = None) -> InputContract:
    """The input contract from the card's train + val pairs (valid pixels of both dates pooled)."""
    pairs = card_pairs(card_path, card, "train") + card_pairs(card_path, card, "val")
    kind = str(card.training_data.get("kind", "levir"))
    dtype, value_range, units = _PRODUCTS.get(kind, ("float32", (0.0, 1.0), ""))
    stats = []
    for k, band in enumerate(card.bands):
        pix = np.concatenate([np.concatenate([p.before[k][p.valid], p.after[k][p.valid]]) for p in pairs])
        pix = pix.astype(np.float64)
        stats.append(BandStats(band=band, quantiles=[round(float(v), 3) for v in np.percentile(pix, QUANTILE_LEVELS)],
                               mean=round(float(pix.mean()), 3), std=round(float(pix.std()), 3)))
    return InputContract(
        dtype=dtype, value_range=value_range, units=units, quantile_levels=list(QUANTILE_LEVELS),
        band_stats=stats,
        pooled_over=f"valid pixels of both dates of the train + val pairs {[p.id for p in pairs]}",
        radiometry=old.radiometry if old is not None else "percentile",
        radiometry_validation=old.radiometry_validation if old is not None else {},
    )


def contract_from_pairs(pairs: list[Any], bands: list[str], *, radiometry: str = "gain",
                        max_pixels: int = 500_000, seed: int = 0) -> InputContract | None:
    """The input contract of a training run, from its in-memory pairs (a seeded subsample of valid pixels).

    A checkpoint trained on 16-bit (or any) imagery thereby records its range, and ``detect`` maps every scene
    to it the same way (:mod:`cspon_rs.inference.radiometry`, default ``radiometry``). Returns None when no pair
    holds its pixels in memory (streamed scenes: run ``card_stats stats`` on the card afterwards).
    """
    held = [p for p in pairs if isinstance(getattr(p, "before", None), np.ndarray)
            and isinstance(getattr(p, "after", None), np.ndarray)]
    if not held:
        return None
    rng = np.random.default_rng(seed)
    per_pair = max(1, max_pixels // len(held))
    columns = []
    for p in held:
        valid = np.flatnonzero(np.asarray(p.valid, dtype=bool).reshape(-1))
        pick = valid if valid.size <= per_pair else rng.choice(valid, size=per_pair, replace=False)
        for img in (p.before, p.after):
            columns.append(np.asarray(img).reshape(img.shape[0], -1)[:, pick].astype(np.float64))
    pix = np.concatenate(columns, axis=1)
    top, integral = float(np.nanmax(pix)), bool(np.all(np.mod(pix, 1) == 0))
    dtype, value_range = (("uint8", (0.0, 255.0)) if integral and top <= 255 else
                          ("uint16", (0.0, 65535.0)) if integral and top <= 65535 else
                          ("float32", (float(np.nanmin(pix)), top)))
    stats = [BandStats(band=band, quantiles=[round(float(v), 3) for v in np.percentile(pix[k], QUANTILE_LEVELS)],
                       mean=round(float(pix[k].mean()), 3), std=round(float(pix[k].std()), 3))
             for k, band in enumerate(bands)]
    return InputContract(
        dtype=dtype, value_range=value_range, units="the training pairs' own units",
        quantile_levels=list(QUANTILE_LEVELS), band_stats=stats,
        pooled_over=f"{pix.shape[1]:,} valid pixels of both dates sampled from the train + val pairs "
        f"{[p.id for p in held][:20]}",
        radiometry=radiometry,
        radiometry_validation={"chosen": radiometry, "criterion": "default for a trained checkpoint (gain-invariant"
                               "; run card_stats select to choose on its validation pairs)"},
    )


def _scaled(pair: Any, factor: float) -> Any:
    import dataclasses

    return dataclasses.replace(pair, before=pair.before * np.float32(factor), after=pair.after * np.float32(factor))


def select_radiometry(card_path: Path, card: ModelCard) -> tuple[str, dict[str, Any]]:
    """Score each method on the card's validation pairs (raw, x 10 and / 100 copies); pick the best.

    The criterion is pooled pixel F1 at the card's threshold on the raw validation pairs, among the methods
    that give the same result whatever the input's gain (``none`` is reported for reference only: it fails
    on any other dtype). Ties go to the simpler method (order of :data:`METHODS`).
    """
    from cspon_rs.inference.radiometry import METHODS

    pairs = card_pairs(card_path, card, "val")
    figures = score_methods(card_path, card, pairs)
    train = card_pairs(card_path, card, "train")
    train_figures = score_methods(card_path, card, train, None, (("raw", 1.0),))
    eligible = [m for m in METHODS if m != "none"]

    def score(m: str) -> float:
        return float(figures[m]["raw"]["f1"] + train_figures[m]["raw"]["f1"]) / 2.0

    best = max(eligible, key=lambda m: (score(m), -eligible.index(m)))
    return best, {
        "pairs": [p.id for p in pairs],
        "train_pairs": [p.id for p in train],
        "criterion": "mean of the pooled pixel F1 at the card threshold on the validation pairs and on the "
        "training pairs (the network saw the latter: they only rank the methods, and one validation city alone "
        "favoured a method that lost 0.12 F1 on the five training cities); 'none' not eligible (not invariant to "
        "the input's gain: the x10 and /100 copies show it)",
        "threshold": card.threshold,
        "chosen": best,
        "figures": figures,
        "train_figures": train_figures,
        "scores": {m: round(score(m), 4) for m in METHODS},
    }


def score_methods(
    card_path: Path, card: ModelCard, pairs: list[Any], methods: tuple[str, ...] | None = None,
    scalings: tuple[tuple[str, float], ...] = (("raw", 1.0), ("x10", 10.0), ("div100", 0.01)),
) -> dict[str, Any]:
    """Pooled pixel figures at the card's threshold of each radiometry method on ``pairs`` (and scaled copies)."""
    import torch

    from cspon_rs.inference.radiometry import METHODS, array_stats, plan_radiometry
    from cspon_rs.models.checkpoint import load_checkpoint
    from cspon_rs.training.evaluate import evaluate_pairs, model_proba

    torch.set_num_threads(1)
    loaded = load_checkpoint(card_path)
    figures: dict[str, Any] = {}
    for method in methods or METHODS:
        row: dict[str, Any] = {}
        for label, factor in scalings:
            probs = []
            for p in pairs:
                q = _scaled(p, factor) if factor != 1.0 else p
                ra = plan_radiometry(array_stats(q.before, q.valid, source=p.id, bands=card.bands),
                                     array_stats(q.after, q.valid, source=p.id, bands=card.bands), card, method)
                probs.append(model_proba(loaded.model, card, ra.apply_before(q.before), ra.apply_after(q.after)))
            m = evaluate_pairs(probs, pairs, threshold=card.threshold)
            row[label] = {"f1": round(m.f1, 4), "precision": round(m.precision, 4), "recall": round(m.recall, 4),
                          "object_recall": round(m.object_recall, 4) if m.objects else None}
        figures[method] = row
        print(f"{method:12s} " + "  ".join(f"{k}: F1 {v['f1']:.3f}" for k, v in row.items()), flush=True)
    return figures


def _write_input(card_path: Path, contract: InputContract) -> None:
    from cspon_rs.exports.fileio import atomic_path

    data = json.loads(card_path.read_text(encoding="utf-8"))
    data["input"] = contract.model_dump(mode="json")
    ModelCard.model_validate(data)
    with atomic_path(card_path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """``stats CARD...`` or ``select CARD...`` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["stats", "select"])
    parser.add_argument("cards", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.cards:
        card = ModelCard.model_validate_json(path.read_text(encoding="utf-8"))
        if args.step == "stats":
            contract = compute_contract(path, card, card.input)
        else:
            if card.input is None:
                raise SystemExit(f"{path}: run 'stats' first")
            best, record = select_radiometry(path, card)
            contract = card.input.model_copy(update={"radiometry": best, "radiometry_validation": record})
        _write_input(path, contract)
        print(f"{path}: input contract written ({args.step}; radiometry {contract.radiometry})")


if __name__ == "__main__":
    main()
