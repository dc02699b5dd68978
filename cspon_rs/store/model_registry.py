"""The county model registry: register a fine-tuned checkpoint, promote it only when it is better, roll back.

A county's field verifications fine-tune a model (``cspon-rs train --init-from CKPT --labels verified.gpkg``);
the fine-tune scores the new model ("candidate") and the model it started from ("parent") on the same
held-back verifications and writes ``<run>/holdout.json``::

    {"labels": {"path": ..., "sha256": ..., "n_train": 80, "n_holdout": 20},
     "candidate": {"f1": 0.71, "warning_precision": 0.8, "threshold": 0.4, ...},
     "parent": {"f1": 0.55, ...}, "parent_checkpoint": "/abs/parent.safetensors", "metric": "f1"}

:func:`register_model` stores the checkpoint (absolute path + sha256 of its weights, bands, detector id)
with those figures. :func:`promote_model` makes it the county's current model only if
``candidate[metric] > figure of the model it replaces on the same held-back verifications`` and the bands
are those of the county's current model. At most one version per county is promoted (a partial unique
index), so two promotions at once end with one winner and one :class:`~cspon_rs.errors.ConflictError`.
:func:`rollback_model` makes the previously promoted version current again. Jobs and
``cspon-rs detect --db --county`` use :func:`current_model`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cspon_rs.errors import (
    CheckpointError,
    ConflictError,
    CorruptFileError,
    MissingFileError,
    NotFoundError,
    PromotionRefusedError,
    SchemaError,
)
from cspon_rs.store.models import ModelEvent, ModelVersion, utcnow

__all__ = [
    "checkpoint_problem",
    "current_model",
    "get_model",
    "list_model_events",
    "list_models",
    "model_summary",
    "promote_model",
    "read_holdout",
    "register_model",
    "rollback_model",
    "verify_checkpoint",
]

_COUNTY = re.compile(r"^[0-9A-Za-z]{1,12}$")


def _weights_and_card(checkpoint: str | Path) -> tuple[Path, Path]:
    p = Path(checkpoint)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def _card(checkpoint: str | Path) -> tuple[Path, list[str], str]:
    """``(absolute weights path, bands, detector id)`` of a checkpoint; its two files must exist."""
    from pydantic import ValidationError

    from cspon_rs.config import format_validation_error
    from cspon_rs.models.card import ModelCard

    weights, card_path = _weights_and_card(checkpoint)
    for needed in (weights, card_path):
        if not needed.is_file():
            raise MissingFileError(
                f"{needed}: checkpoint file not found; a checkpoint is <name>.safetensors + <name>.json"
            )
    try:
        card = ModelCard.model_validate(json.loads(card_path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{card_path}: not a readable JSON model card ({exc})") from exc
    except ValidationError as exc:
        raise CheckpointError(format_validation_error(exc, str(card_path))) from exc
    return weights.resolve(), list(card.bands), card.detector_id


def _figure(block: Any, metric: str, where: str, source: str) -> float:
    value = block.get(metric) if isinstance(block, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise SchemaError(f"{source}: {where}.{metric} must be a number, got {value!r}")
    return float(value)


def read_holdout(holdout: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Read and check a fine-tune's ``holdout.json`` (or the dict itself).

    Required: ``metric`` (name of the deciding figure), ``candidate[metric]`` and ``parent[metric]`` (numbers,
    on the same held-back verifications); optional: ``labels`` (``path``, ``sha256``, ``n_train``,
    ``n_holdout``), ``parent_checkpoint``.

    Raises:
        MissingFileError, CorruptFileError: No such file / not JSON.
        SchemaError: A required key is missing or not a number (the message names it).
    """
    source = "holdout"
    if isinstance(holdout, str | Path):
        source = str(holdout)
        path = Path(holdout)
        if not path.is_file():
            raise MissingFileError(f"{path}: holdout file not found (the fine-tune writes <run>/holdout.json)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CorruptFileError(f"{path}: not readable JSON ({exc})") from exc
    else:
        data = dict(holdout)
    if not isinstance(data, dict):
        raise SchemaError(f"{source}: expected a JSON object with metric, candidate and parent")
    metric = data.get("metric")
    if not isinstance(metric, str) or not metric:
        raise SchemaError(f"{source}: 'metric' must name the deciding figure, e.g. \"f1\"; got {metric!r}")
    for block in ("candidate", "parent"):
        _figure(data.get(block), metric, block, source)
    labels = data.get("labels")
    if labels is not None and not isinstance(labels, dict):
        raise SchemaError(f"{source}: 'labels' must be an object with path, sha256, n_train, n_holdout")
    return data


@contextmanager
def _write(session: Session, what: str, conflict: str = "changed by someone else meanwhile") -> Iterator[None]:
    """One transaction; a broken unique rule (a second promoted model, a duplicate) becomes ConflictError."""
    try:
        yield
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise ConflictError(f"{what}: {conflict}; reload and try again") from exc
    except BaseException:
        session.rollback()
        raise


def _event(session: Session, model: ModelVersion, event: str, by: str | None, **details: Any) -> None:
    session.add(ModelEvent(model_id=model.id, county_code=model.county_code, event=event, by=by,
                           details=details or None))


def _retire(session: Session, current: ModelVersion, now: dt.datetime) -> None:
    """Retire the county's promoted model, only if it still is the promoted one (else ConflictError)."""
    retired = session.execute(
        update(ModelVersion)
        .where(ModelVersion.id == current.id, ModelVersion.status == "promoted")
        .values(status="retired", retired_at=now)
        .execution_options(synchronize_session=False)
    )
    if retired.rowcount != 1:  # type: ignore[attr-defined]
        raise ConflictError(
            f"county {current.county_code}'s current model changed meanwhile; reload and try again"
        )


def get_model(session: Session, model_id: int) -> ModelVersion:
    """One registered model version (fresh from the database).

    Raises:
        NotFoundError: No such id.
    """
    model = session.get(ModelVersion, model_id, populate_existing=True)
    if model is None:
        raise NotFoundError(f"model version {model_id} is not registered (see cspon-rs models list)")
    return model


def current_model(session: Session, county_code: str) -> ModelVersion | None:
    """The county's promoted model version, or ``None`` when none is promoted."""
    return session.scalars(
        select(ModelVersion)
        .where(ModelVersion.county_code == county_code, ModelVersion.status == "promoted")
        .execution_options(populate_existing=True)
    ).first()


def list_models(session: Session, *, county_code: str | None = None) -> list[ModelVersion]:
    """Registered versions (of one county), newest first."""
    query = select(ModelVersion).order_by(ModelVersion.id.desc())
    if county_code is not None:
        query = query.where(ModelVersion.county_code == county_code)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def list_model_events(session: Session, *, county_code: str | None = None,
                      model_id: int | None = None) -> list[ModelEvent]:
    """Registry events (registered, promoted, retired, rolled_back), oldest first."""
    query = select(ModelEvent).order_by(ModelEvent.id)
    if county_code is not None:
        query = query.where(ModelEvent.county_code == county_code)
    if model_id is not None:
        query = query.where(ModelEvent.model_id == model_id)
    return list(session.scalars(query))


def register_model(
    session: Session,
    *,
    county_code: str,
    checkpoint: str | Path,
    holdout: str | Path | Mapping[str, Any],
    by: str | None = None,
) -> ModelVersion:
    """Register a checkpoint for a county with its held-back verification figures (status ``registered``).

    Args:
        county_code: County the model was fine-tuned for, e.g. ``810000``.
        checkpoint: The ``.safetensors`` weights (or stem / ``.json`` card) -- stored as an absolute path with
            the sha256 of the weights, the card's bands and ``name@version``.
        holdout: The fine-tune's ``holdout.json`` (see :func:`read_holdout`).
        by: Who registers it.

    Raises:
        MissingFileError, CheckpointError: The checkpoint is incomplete or its card invalid.
        SchemaError: The holdout figures are missing; a bad county code.
        ConflictError: The same weights are already registered for this county (the message names the id).
    """
    from cspon_rs.geo.files import file_sha256

    if not _COUNTY.match(county_code):
        raise SchemaError(f"county code {county_code!r}: use the 6-digit administrative code, e.g. 510000")
    data = read_holdout(holdout)
    weights, bands, detector = _card(checkpoint)
    sha = file_sha256(weights)
    parent_checkpoint = data.get("parent_checkpoint")
    parent_sha: str | None = None
    if isinstance(parent_checkpoint, str) and parent_checkpoint:
        parent_weights, _ = _weights_and_card(parent_checkpoint)
        parent_sha = file_sha256(parent_weights) if parent_weights.is_file() else None
        parent_checkpoint = str(parent_weights.resolve()) if parent_weights.is_file() else parent_checkpoint
    else:
        parent_checkpoint = None
    labels = data.get("labels") or {}
    with _write(session, f"registering {weights} for county {county_code}"):
        taken = session.scalar(select(ModelVersion).where(
            ModelVersion.county_code == county_code, ModelVersion.checkpoint_sha256 == sha))
        if taken is not None:
            raise ConflictError(
                f"{weights}: these weights (sha256 {sha[:12]}…) are already registered for county {county_code} "
                f"as model {taken.id} ({taken.status})"
            )
        parent_id = None
        if parent_sha is not None:
            parent_id = session.scalar(select(ModelVersion.id).where(
                ModelVersion.county_code == county_code, ModelVersion.checkpoint_sha256 == parent_sha))
        model = ModelVersion(
            county_code=county_code, checkpoint_path=str(weights), checkpoint_sha256=sha, bands=bands,
            detector=detector, parent_id=parent_id, parent_checkpoint=parent_checkpoint, parent_sha256=parent_sha,
            labels_path=_opt_str(labels.get("path")), labels_sha256=_opt_str(labels.get("sha256")),
            labels_n_train=_opt_int(labels.get("n_train")), labels_n_holdout=_opt_int(labels.get("n_holdout")),
            metric=str(data["metric"]), metrics=json.loads(json.dumps(data, default=str)), status="registered",
            registered_by=by, registered_at=utcnow(),
        )
        session.add(model)
        session.flush()
        _event(session, model, "registered", by, checkpoint=str(weights), sha256=sha, metric=model.metric,
               candidate=_figure(data["candidate"], model.metric, "candidate", "holdout"),
               parent=_figure(data["parent"], model.metric, "parent", "holdout"))
    return model


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def checkpoint_problem(model: ModelVersion) -> str | None:
    """Why a registered model's checkpoint cannot be used (file gone, weights changed), or ``None``."""
    from cspon_rs.geo.files import file_sha256

    path = Path(model.checkpoint_path)
    if not path.is_file():
        return f"its checkpoint {path} is gone"
    now = file_sha256(path)
    if now != model.checkpoint_sha256:
        return (f"its checkpoint {path} changed since registration "
                f"(sha256 {model.checkpoint_sha256[:12]}… registered, {now[:12]}… now)")
    return None


def verify_checkpoint(model: ModelVersion) -> Path:
    """The model's weights path after checking the file is there with the registered sha256.

    Raises:
        CheckpointError: The file is gone or its weights changed since registration.
    """
    problem = checkpoint_problem(model)
    if problem:
        raise CheckpointError(f"county {model.county_code} model {model.id} ({model.detector}): {problem}; "
                              "register the checkpoint again or roll back (cspon-rs models rollback)")
    return Path(model.checkpoint_path)


def _describe(model: ModelVersion) -> str:
    return f"model {model.id} ({model.detector}, sha256 {model.checkpoint_sha256[:12]}…)"


def _baseline(session: Session, model: ModelVersion, current: ModelVersion | None) -> tuple[float, str]:
    """The figure ``model`` must beat, and what it belongs to (both on the same held-back verifications)."""
    metric = model.metric
    parent_figure = _figure(model.metrics.get("parent"), metric, "parent", f"model {model.id}")
    n = model.labels_n_holdout
    same = f"on the same {n} held-back verifications" if n is not None else "on the same held-back verifications"
    if current is None:
        return parent_figure, (f"its parent {model.parent_checkpoint or '(unnamed)'} (county {model.county_code} "
                               f"has no promoted model yet) {same}")
    if current.checkpoint_sha256 == model.parent_sha256 or current.id == model.parent_id:
        return parent_figure, f"county {model.county_code}'s current {_describe(current)} {same}"
    raise PromotionRefusedError(
        f"model {model.id} was scored against its parent {model.parent_checkpoint or '(unnamed)'}, but county "
        f"{model.county_code}'s current model is {_describe(current)}: the figures are not on the same held-back "
        f"verifications. Fine-tune from the current model (cspon-rs train --init-from {current.checkpoint_path}) "
        "and register that run instead"
    )


def _base_bands(session: Session, model: ModelVersion, current: ModelVersion | None) -> tuple[list[str] | None, str]:
    if current is not None:
        return list(current.bands), f"county {model.county_code}'s current {_describe(current)}"
    if model.parent_id is not None:
        parent = session.get(ModelVersion, model.parent_id)
        if parent is not None:
            return list(parent.bands), f"its parent {_describe(parent)}"
    if model.parent_checkpoint:
        try:
            _, bands, detector = _card(model.parent_checkpoint)
        except (MissingFileError, CorruptFileError, CheckpointError):
            return None, ""
        return bands, f"its parent {detector} ({model.parent_checkpoint})"
    return None, ""


def promote_model(
    session: Session,
    model_id: int,
    *,
    by: str | None,
    expected_current_id: int | Literal["now"] | None = "now",
) -> ModelVersion:
    """Make a registered model the county's current model -- only if it is better, on the same bands.

    Refused (:class:`~cspon_rs.errors.PromotionRefusedError`, nothing written) unless
    ``candidate[metric]`` beats the county's currently promoted model on the held-back verifications (the
    ``parent`` figures of its ``holdout.json`` when the current model is its parent; when none is promoted,
    the parent's figures), the bands equal the current model's (else its parent's), and the checkpoint file
    still has the registered sha256. The message reports both figures.

    Args:
        model_id: Registered version to promote.
        by: Who promotes it (recorded).
        expected_current_id: Id of the current model the caller decided against (``None``: none promoted).
            ``"now"`` reads it when the call starts. If another promotion or rollback changed the county's
            current model meanwhile, :class:`~cspon_rs.errors.ConflictError` is raised.

    Returns:
        The promoted version.

    Raises:
        NotFoundError, PromotionRefusedError, ConflictError.
    """
    model = get_model(session, model_id)
    county = model.county_code
    if expected_current_id == "now":
        seen = current_model(session, county)
        expected_current_id = seen.id if seen is not None else None
        session.commit()  # end the read; the decision below is checked again inside the write
    with _write(session, f"promoting model {model_id} for county {county}",
                f"county {county}'s current model changed meanwhile (another promotion won)"):
        model = get_model(session, model_id)
        if model.status == "promoted":
            raise ConflictError(f"model {model_id} is already county {county}'s current model")
        current = current_model(session, county)
        current_id = current.id if current is not None else None
        if current_id != expected_current_id:
            raise ConflictError(
                f"county {county}'s current model changed meanwhile (model {expected_current_id} expected, "
                f"model {current_id} now); reload and decide again before promoting model {model_id}"
            )
        problem = checkpoint_problem(model)
        if problem:
            raise PromotionRefusedError(f"model {model_id} not promoted: {problem}")
        bands, bands_of = _base_bands(session, model, current)
        from cspon_rs.models.card import same_bands

        if bands is not None and not same_bands(list(bands), list(model.bands)):
            raise PromotionRefusedError(
                f"model {model_id} not promoted: it was trained for bands {model.bands}, but {bands_of} takes "
                f"bands {bands} (expected {bands}, given {model.bands})"
            )
        if model.metrics.get("comparable") is False:
            raise PromotionRefusedError(
                f"model {model_id} not promoted: its held-back figures are not comparable with its parent's "
                f"({model.metrics.get('why_not_comparable') or 'the held-back labels have one class only'}); "
                "fine-tune with pixel labels or labels of both kinds"
            )
        metric = model.metric
        figure = _figure(model.metrics.get("candidate"), metric, "candidate", f"model {model_id}")
        base, base_of = _baseline(session, model, current)
        if not figure > base:
            raise PromotionRefusedError(
                f"model {model_id} not promoted: its {metric} {figure:.4f} does not beat {metric} {base:.4f} of "
                f"{base_of}"
            )
        now = utcnow()
        if current is not None:
            _retire(session, current, now)
            _event(session, current, "retired", by, replaced_by=model.id)
        promoted = session.execute(
            update(ModelVersion)
            .where(ModelVersion.id == model.id, ModelVersion.status == model.status)
            .values(status="promoted", promoted_by=by, promoted_at=now, replaced_id=current_id, retired_at=None)
            .execution_options(synchronize_session=False)
        )
        if promoted.rowcount != 1:  # type: ignore[attr-defined]
            raise ConflictError(f"model {model_id} changed meanwhile; reload and try again")
        _event(session, model, "promoted", by, metric=metric, candidate=figure, baseline=base,
               baseline_of=base_of, replaced_id=current_id)
        session.flush()  # a second promoted row for the county breaks the partial unique index here
    return get_model(session, model_id)


def rollback_model(session: Session, county_code: str, *, by: str | None) -> tuple[ModelVersion, ModelVersion | None]:
    """Retire the county's current model and make the version it replaced current again.

    When the current model replaced none (it was the county's first), the county goes back to having no
    promoted model: jobs then use the service's default checkpoint.

    Returns:
        ``(retired version, version current now or None)``.

    Raises:
        NotFoundError: The county has no promoted model.
        PromotionRefusedError: The previous version's checkpoint is gone or changed (nothing is changed).
        ConflictError: Another promotion or rollback changed the county's model meanwhile.
    """
    with _write(session, f"rolling back county {county_code}'s model",
                f"county {county_code}'s current model changed meanwhile"):
        current = current_model(session, county_code)
        if current is None:
            raise NotFoundError(f"county {county_code} has no promoted model, so there is nothing to roll back")
        previous = get_model(session, current.replaced_id) if current.replaced_id is not None else None
        if previous is not None:
            problem = checkpoint_problem(previous)
            if problem:
                raise PromotionRefusedError(
                    f"cannot roll back county {county_code} to model {previous.id}: {problem}")
        now = utcnow()
        _retire(session, current, now)
        _event(session, current, "rolled_back", by, back_to=previous.id if previous is not None else None)
        if previous is not None:
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.id == previous.id)
                .values(status="promoted", promoted_by=by, promoted_at=now, retired_at=None)
                .execution_options(synchronize_session=False)
            )
            _event(session, previous, "promoted", by, rollback_from=current.id)
        session.flush()
    return get_model(session, current.id), (get_model(session, previous.id) if previous is not None else None)


def model_summary(model: ModelVersion) -> dict[str, Any]:
    """A JSON-friendly summary of a version (for job logs and results)."""
    return {
        "id": model.id, "county_code": model.county_code, "detector": model.detector,
        "checkpoint": model.checkpoint_path, "sha256": model.checkpoint_sha256, "status": model.status,
        "promoted_at": _iso(model.promoted_at),
    }


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return (value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value).isoformat()
