"""Run one job (``python -m cspon_rs.api.jobrunner <job id>``), started by the worker.

Steps of a ``detect_warn`` job: detect change patches on the scene pair
(:func:`cspon_rs.inference.detect_pair`), then classify them into warnings and store them
(:func:`cspon_rs.rules.run_warning_pipeline`). Detection writes only files under ``<data_dir>/jobs/<id>``;
the warning-store stage is ONE transaction (warnings, history, raw patches and the job's ``committed``
record together, see :func:`cspon_rs.store.crud.job_scope`); the lists and chips after it are files again.
Progress and log lines go to the job row; any exception fails the job with its message, and the final
state says what stayed committed (:func:`cspon_rs.store.api_crud.finish_job`).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from cspon_rs.api.db import make_engine, make_sessionmaker, session_scope
from cspon_rs.api.settings import ServeSettings, settings_from_env
from cspon_rs.errors import MissingFileError
from cspon_rs.store.api_crud import finish_job, get_job, get_scene, set_job_progress
from cspon_rs.store.crud import JobStoppedError, job_scope

__all__ = ["JobCancelled", "run_job"]


class JobCancelled(Exception):
    """Cancellation was requested between two steps."""


def _summary(value: Any) -> Any:
    """JSON-friendly summary of a step's return value."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        if len(value) > 50:
            return {"count": len(value)}
        return {str(k): _summary(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_summary(v) for v in value][:50]
    if hasattr(value, "__dataclass_fields__"):
        return {
            k: _summary(getattr(value, k))
            for k in value.__dataclass_fields__
            if not hasattr(getattr(value, k), "to_json")
        }  # leave out (Geo)DataFrames
    if hasattr(value, "model_dump"):
        return _summary(value.model_dump())
    return repr(value)[:500]


def _pick_checkpoint(
    factory: Any, named: str | None, county: str, default: str
) -> tuple[str, dict[str, Any]]:
    """The checkpoint a job runs: the one named in the job, else the county's promoted model, else ``default``.

    Returns:
        ``(checkpoint, info)`` -- ``info["why"]`` is the log line; ``info["source"]`` is ``job``, ``county`` or
        ``default``.

    Raises:
        CheckpointError: The county's promoted checkpoint is gone or changed since it was registered.
    """
    from cspon_rs.store.model_registry import current_model, verify_checkpoint

    if named:
        return named, {"source": "job", "checkpoint": named, "why": f"{named} (named in the job)"}
    with session_scope(factory) as session:
        model = current_model(session, county)
        if model is None:
            return default, {"source": "default", "checkpoint": default,
                             "why": f"{default} (service default; county {county} has no promoted model)"}
        path = str(verify_checkpoint(model))
        why = (f"county {county}'s promoted model version {model.id} ({model.detector}, "
               f"sha256 {model.checkpoint_sha256[:12]}…) {path}")
        return path, {"source": "county", "checkpoint": path, "model_version_id": model.id, "why": why}


def end_on_error(factory: Any, job_id: int, exc: Exception) -> str:
    """Record how a job ended on an exception (``cancelled`` for :class:`JobCancelled`, else ``failed`` with the
    reason) and return that state."""
    if isinstance(exc, JobCancelled):
        with session_scope(factory) as session:
            finish_job(session, job_id, "cancelled", error="cancelled by user", message="cancelled")
        return "cancelled"
    reason = f"{type(exc).__name__}: {exc}"
    traceback.print_exc()
    with session_scope(factory) as session:
        finish_job(session, job_id, "failed", error=reason, message=f"failed: {reason}")
    return "failed"


def run_job(job_id: int, settings: ServeSettings) -> str:
    """Execute job ``job_id`` (already claimed, state ``running``) and record its outcome.

    Returns:
        The final state written (``succeeded``, ``failed`` or ``cancelled``).
    """
    engine = make_engine(settings.db_url)
    factory = make_sessionmaker(engine)
    from cspon_rs.api.report_service import REPORT_KIND, run_report_job

    with session_scope(factory) as session:
        kind = get_job(session, job_id).kind
    if kind == REPORT_KIND:  # the period report (POST /exports/report-jobs)
        engine.dispose()
        return run_report_job(job_id, settings)

    def progress(fraction: float, message: str | None = None) -> None:
        with session_scope(factory) as session:
            if not set_job_progress(session, job_id, fraction, message):
                raise JobCancelled(f"job {job_id} was cancelled")

    try:
        with session_scope(factory) as session:
            job = get_job(session, job_id)
            scene = get_scene(session, job.scene_id) if job.scene_id is not None else None
            params = dict(job.params or {})
            period, county = job.period, job.county_code
        if scene is None:
            raise ValueError(f"job {job_id} has no scene")
        # Fail fast, before the heavy imports, when an input vanished since submission.
        inputs = {
            "before": scene.before_path,
            "after": scene.after_path,
            **{k: v for k, v in params.items() if k.endswith("_path") and v},
        }
        for what, path in inputs.items():
            if not Path(str(path)).is_file():
                raise MissingFileError(f"{what}: {path} no longer exists on the server; register it again")
        out_dir = (settings.data_dir / "jobs" / str(job_id)).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint, model_info = _pick_checkpoint(factory, params.get("checkpoint"), county, settings.checkpoint)

        progress(0.02, f"model: {model_info['why']}")
        import datetime as dt

        from cspon_rs.inference.config import DetectConfig
        from cspon_rs.inference.detect import detect_pair

        progress(0.05, f"detecting changes: {scene.before_path} -> {scene.after_path}")
        # the settings `cspon-rs detect` uses by default (suppression, MMU, radiometry, classifier), one process
        detect_settings = {**DetectConfig().detect_kwargs(), "checkpoint": checkpoint, "workers": 1, "scheduler": None}
        detection = detect_pair(
            scene.before_path,
            scene.after_path,
            out_dir / "detect",
            **detect_settings,
            t1=dt.date.fromisoformat(scene.before_date) if scene.before_date else None,
            t2=dt.date.fromisoformat(scene.after_date) if scene.after_date else None,
            progress=False,
            # 5 % -> 60 % over the model windows; a cancel request stops the run between blocks.
            on_progress=lambda done, total: progress(0.05 + 0.55 * done / max(total, 1)),
        )
        changes_path = Path(detection.patches_path)
        progress(
            0.6,
            f"detection done: {detection.n_patches} patches, {detection.changed_area_m2:.0f} m² "
            f"({changes_path})",
        )
        # What radiometry did to each date, and why there is no patch if there is none (never silent, #20).
        for line in [*(detection.radiometry.lines() if detection.radiometry else []), detection.empty_reason,
                     detection.suppression and f"suppression: {detection.suppression}",
                     detection.classifier and f"warning classifier: {detection.classifier}"]:
            if line:
                progress(0.6, line)

        from cspon_rs.rules.pipeline import run_warning_pipeline

        progress(0.65, f"classifying warnings for county {county}, period {period}")
        # The warning-store stage is one transaction that also records itself on this job (``committed``),
        # and commits only while the job runs without a cancel request (JobStoppedError otherwise).
        with job_scope(job_id):
            warned = run_warning_pipeline(
                changes_path,
                params["permits_path"],
                params["control_lines_path"],
                period=period,
                county_code=county,
                out_dir=out_dir / "warn",
                db_url=settings.db_url,
                townships_path=params.get("townships_path"),
                landuse_path=params.get("landuse_path"),
                before=scene.before_path,
                after=scene.after_path,
            )
        progress(
            0.95,
            f"stored {warned.n_warnings} warnings ({warned.total_area_mu:.1f} mu): "
            f"{len(warned.created)} new, {len(warned.merged)} merged into earlier periods",
        )
        model_info |= {"detector": detection.detector, "model_sha256": detection.model_sha256,
                       "model_version_id": warned.model_version_id}
        result = {
            "out_dir": str(out_dir),
            "model": model_info,
            "detection": _summary(detection),
            "warnings": _summary(warned),
        }
        with session_scope(factory) as session:
            finish_job(session, job_id, "succeeded", result=result, message="succeeded")
        return "succeeded"
    except JobStoppedError:
        with session_scope(factory) as session:
            cancelled = get_job(session, job_id).cancel_requested
        state = "cancelled" if cancelled else "failed"
        why = "cancelled by user" if cancelled else "stopped before its warnings were stored"
        with session_scope(factory) as session:
            finish_job(session, job_id, state, error=why, message=f"{state}: {why}")
        return state
    except Exception as exc:
        return end_on_error(factory, job_id, exc)
    finally:
        engine.dispose()


def main() -> None:
    """Entry point: ``python -m cspon_rs.api.jobrunner <job id>``."""
    from cspon_rs.api.worker import set_parent_death_signal

    set_parent_death_signal()
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: python -m cspon_rs.api.jobrunner <job id>")
    state = run_job(int(sys.argv[1]), settings_from_env())
    sys.exit(0 if state != "failed" else 1)


if __name__ == "__main__":
    main()
