"""CLI of the closed loop: ``cspon-rs labels export`` and ``cspon-rs models register|promote|list|rollback|refit``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

labels_app = typer.Typer(help="Training labels from field verifications.", no_args_is_help=True)
models_app = typer.Typer(help="The county model registry: register, promote, list, roll back.",
                         no_args_is_help=True)

DbOption = Annotated[str, typer.Option("--db", help="Store URL, e.g. sqlite:///out/warnings.sqlite")]


@labels_app.command("export")
def labels_export(
    db: DbOption,
    county: Annotated[str, typer.Option(help="County code, e.g. 810000")],
    out: Annotated[Path, typer.Option(help="Output GeoPackage, e.g. verified.gpkg")],
    period: Annotated[str | None, typer.Option(help="Only this period, e.g. 2018Q1")] = None,
) -> None:
    """Write the county's verified warnings as training labels (layer verified_labels; 1 real change, 0 false).

    Field verifications and desk triage decisions (column source = field / desk; a field check overrides
    the desk). Labels whose scene file is gone or changed (sha256) are listed on stderr and skipped.
    """
    from cspon_rs.store.db import open_existing_store
    from cspon_rs.store.labels import LABEL_LAYER, export_labels

    sessions = open_existing_store(db)
    try:
        with sessions() as session:
            result = export_labels(session, out, county_code=county, period=period)
    finally:
        sessions.kw["bind"].dispose()
    for skipped in result.skipped:
        typer.echo(f"skipped {skipped}", err=True)
    scope = f"county {county}" + (f" period {period}" if period else "")
    n_field_skipped = sum(1 for s in result.skipped if s.source == "field")
    if result.n_labels == 0:
        typer.echo(f"no usable verified warnings for {scope}"
                   + (f" ({len(result.skipped)} skipped, listed above)" if result.skipped else "")
                   + f"; wrote an empty {LABEL_LAYER} layer with the label schema to {result.path}")
        return
    typer.echo(f"wrote {result.n_labels} labels for {scope} ({result.n_real} real change, {result.n_false} false "
               f"change; {result.n_labels - result.n_desk} field, {result.n_desk} desk; {n_field_skipped} "
               f"verifications skipped, {len(result.skipped) - n_field_skipped} desk decisions skipped) to "
               f"{result.path} (layer {LABEL_LAYER})")


def _version_line(model: object) -> str:
    from cspon_rs.store.models import ModelVersion

    assert isinstance(model, ModelVersion)
    figures = model.metrics or {}
    cand = (figures.get("candidate") or {}).get(model.metric)
    parent = (figures.get("parent") or {}).get(model.metric)
    fig = f"{model.metric} {cand:.4f} vs parent {parent:.4f}" if isinstance(cand, float | int) and isinstance(
        parent, float | int) else ""
    return (f"{model.id:>4}  {model.county_code}  {model.status:<10}  {model.detector}  "
            f"sha256 {model.checkpoint_sha256[:12]}  {fig}  {model.checkpoint_path}")


@models_app.command("register")
def models_register(
    db: DbOption,
    county: Annotated[str, typer.Option(help="County code the model was fine-tuned for")],
    holdout: Annotated[Path, typer.Option(help="The fine-tune's <run>/holdout.json (held-back figures)")],
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint .safetensors (default: the holdout's "
                                                    "candidate_checkpoint, else <run>/best.safetensors)")] = None,
    by: Annotated[str | None, typer.Option(help="Who registers it")] = None,
) -> None:
    """Register a fine-tuned checkpoint for a county with its held-back verification figures."""
    from cspon_rs.store.db import open_existing_store
    from cspon_rs.store.model_registry import read_holdout, register_model

    data = read_holdout(holdout)
    if checkpoint is None:
        named = data.get("candidate_checkpoint")
        checkpoint = Path(named) if isinstance(named, str) and named else holdout.parent / "best.safetensors"
    sessions = open_existing_store(db)
    try:
        with sessions() as session:
            model = register_model(session, county_code=county, checkpoint=checkpoint, holdout=data, by=by)
            typer.echo(f"registered model {model.id} for county {county}:\n{_version_line(model)}")
    finally:
        sessions.kw["bind"].dispose()


@models_app.command("promote")
def models_promote(
    db: DbOption,
    model_id: Annotated[int, typer.Option("--id", help="Registered model id (cspon-rs models list)")],
    by: Annotated[str, typer.Option(help="Who promotes it (recorded)")],
) -> None:
    """Make a model its county's current one -- refused unless it beats the current model on held-back checks."""
    from cspon_rs.store.db import open_existing_store
    from cspon_rs.store.model_registry import list_model_events, promote_model

    sessions = open_existing_store(db)
    try:
        with sessions() as session:
            model = promote_model(session, model_id, by=by)
            event = list_model_events(session, model_id=model.id)[-1]
            details = event.details or {}
            typer.echo(f"promoted model {model.id} ({model.detector}) for county {model.county_code}: "
                       f"{model.metric} {details.get('candidate', float('nan')):.4f} beats "
                       f"{details.get('baseline', float('nan')):.4f} of {details.get('baseline_of', '?')}")
    finally:
        sessions.kw["bind"].dispose()


@models_app.command("list")
def models_list(
    db: DbOption,
    county: Annotated[str | None, typer.Option(help="Only this county")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per version")] = False,
) -> None:
    """Registered model versions, newest first (status registered / promoted / retired)."""
    from cspon_rs.store.db import open_existing_store
    from cspon_rs.store.model_registry import list_models, model_summary

    sessions = open_existing_store(db)
    try:
        with sessions() as session:
            models = list_models(session, county_code=county)
            for model in models:
                typer.echo(json.dumps(model_summary(model)) if as_json else _version_line(model))
            if not models and not as_json:
                typer.echo("no registered models" + (f" for county {county}" if county else ""))
    finally:
        sessions.kw["bind"].dispose()


@models_app.command("rollback")
def models_rollback(
    db: DbOption,
    county: Annotated[str, typer.Option(help="County code")],
    by: Annotated[str, typer.Option(help="Who rolls back (recorded)")],
) -> None:
    """Retire the county's current model; the version it replaced becomes current again."""
    from cspon_rs.store.db import open_existing_store
    from cspon_rs.store.model_registry import rollback_model

    sessions = open_existing_store(db)
    try:
        with sessions() as session:
            retired, current = rollback_model(session, county, by=by)
            session.commit()
            now = (f"model {current.id} ({current.detector}) is current again" if current is not None
                   else "no model is promoted now; jobs use the default checkpoint")
            typer.echo(f"county {county}: retired model {retired.id} ({retired.detector}); {now}")
            from cspon_rs.training.county_refit import county_classifier, rescore_open_warnings

            n, low = rescore_open_warnings(session, county, county_classifier(session, county))
            session.commit()
            if n:
                typer.echo(f"{n} open warnings re-scored with the current model's classifier ({low} below its "
                           "operating point, suggested for 内业排除)")
    finally:
        sessions.kw["bind"].dispose()


@models_app.command("refit")
def models_refit(
    db: DbOption,
    county: Annotated[str, typer.Option(help="County code")],
    by: Annotated[str, typer.Option(help="Who asks (recorded)")] = "cli",
    out: Annotated[Path, typer.Option(help="Folder for county checkpoints (<out>/<county>/<time>/)")] = Path(
        "county_models"),
    min_labels: Annotated[int, typer.Option(help="Fewest labelled warnings to fit from")] = 20,
    seed: Annotated[int, typer.Option(help="Split and fit seed")] = 0,
) -> None:
    """Re-fit the county's warning classifier from its desk + field labels; promote it only when it beats the
    current one on held-back labels; then re-score and re-rank the county's open warnings."""
    from cspon_rs.store.db import open_existing_store
    from cspon_rs.training.county_refit import refit_county

    sessions = open_existing_store(db)
    try:
        with sessions() as session:
            result = refit_county(session, county, by=by, out_dir=out, min_labels=min_labels, seed=seed)
            typer.echo(f"{result.message} ({result.seconds:.1f} s)")
    finally:
        sessions.kw["bind"].dispose()


def register(app: typer.Typer) -> None:
    """Add ``labels`` and ``models`` to ``app``."""
    app.add_typer(labels_app, name="labels")
    app.add_typer(models_app, name="models")
