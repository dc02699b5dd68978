"""The county model registry on a real SQLite file (and PostGIS when CSPON_TEST_PG_URL is set): register,
promote only what is better on the same held-back verifications and the same bands, one winner when two
promotions race, roll back; warnings record the model version; the CLI and `detect --db --county`."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyogrio
import pytest
from closed_loop_support import SHIPPED, derived_checkpoint, write_holdout, write_scene
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cspon_rs.errors import ConflictError, NotFoundError, PromotionRefusedError, SchemaError
from cspon_rs.geo.files import file_sha256
from cspon_rs.rules.engine import classify
from cspon_rs.rules.synthetic import LocalFrame, patches_frame
from cspon_rs.store.crud import RunProvenance, get_warning, save_warnings
from cspon_rs.store.db import sqlite_url
from cspon_rs.store.model_registry import (
    current_model,
    list_model_events,
    list_models,
    promote_model,
    register_model,
    rollback_model,
)
from cspon_rs.store.models import ModelVersion

REPO = Path(__file__).resolve().parents[2]
COUNTY = "810000"
PARENT = SHIPPED["s2-rgbn"].with_suffix(".safetensors")


def _candidate(tmp: Path, name: str, *, f1: float, parent_f1: float, parent: Path | None = PARENT,
               source: str = "s2-rgbn", bump: float = 1e-3) -> tuple[Path, Path]:
    ckpt = derived_checkpoint(tmp / name / "best", source=source, version=name, bump=bump)
    holdout = write_holdout(tmp / name / "holdout.json", candidate=f1, parent=parent_f1, parent_checkpoint=parent,
                            candidate_checkpoint=ckpt)
    return ckpt, holdout


def test_register_records_checkpoint_labels_and_figures(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    ckpt, holdout = _candidate(tmp_path, "a", f1=0.62, parent_f1=0.41)
    with sessions() as session:
        model = register_model(session, county_code=COUNTY, checkpoint=ckpt, holdout=holdout, by="lab")
        assert model.status == "registered" and model.county_code == COUNTY
        assert model.checkpoint_path == str(ckpt.resolve()) and Path(model.checkpoint_path).is_absolute()
        assert model.checkpoint_sha256 == file_sha256(ckpt)
        assert model.bands == ["B04", "B03", "B02", "B08"] and model.detector == "s2-rgbn-effl0-siamunet@a"
        assert model.parent_sha256 == file_sha256(PARENT) and model.parent_id is None  # shipped, not registered
        assert (model.labels_n_train, model.labels_n_holdout, model.metric) == (30, 12, "f1")
        assert model.metrics["candidate"]["f1"] == 0.62 and model.metrics["parent"]["f1"] == 0.41
        assert [e.event for e in list_model_events(session, county_code=COUNTY)] == ["registered"]
        # the same weights twice for the county: refused, naming the id
        with pytest.raises(ConflictError, match=f"model {model.id}"):
            register_model(session, county_code=COUNTY, checkpoint=ckpt, holdout=holdout)
        # a child of a registered model points at it
        child, child_holdout = _candidate(tmp_path, "b", f1=0.7, parent_f1=0.62, parent=ckpt, bump=2e-3)
        second = register_model(session, county_code=COUNTY, checkpoint=child, holdout=child_holdout)
        assert second.parent_id == model.id
        assert [m.id for m in list_models(session, county_code=COUNTY)] == [second.id, model.id]
    bad = write_holdout(tmp_path / "bad.json", candidate=0.5, parent=0.4, parent_checkpoint=None, metric="iou")
    with sessions() as session, pytest.raises(SchemaError, match=r"candidate\.iou"):
        register_model(session, county_code=COUNTY, checkpoint=ckpt, holdout=bad)


def test_promote_only_what_beats_the_current_model(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    a, ha = _candidate(tmp_path, "a", f1=0.60, parent_f1=0.40)
    worse_than_parent, hw = _candidate(tmp_path, "w", f1=0.35, parent_f1=0.40, bump=5e-3)
    with sessions() as session:
        ma = register_model(session, county_code=COUNTY, checkpoint=a, holdout=ha)
        mw = register_model(session, county_code=COUNTY, checkpoint=worse_than_parent, holdout=hw)
        # no model promoted yet: compared with the parent's figures in its own holdout.json
        with pytest.raises(PromotionRefusedError) as refused:
            promote_model(session, mw.id, by="boss")
        assert "0.3500" in str(refused.value) and "0.4000" in str(refused.value), refused.value
        assert current_model(session, COUNTY) is None
        promoted = promote_model(session, ma.id, by="boss")
        assert promoted.status == "promoted" and promoted.promoted_by == "boss" and promoted.promoted_at
        assert current_model(session, COUNTY).id == ma.id  # type: ignore[union-attr]
        with pytest.raises(ConflictError, match="already"):
            promote_model(session, ma.id, by="boss")
        # a child of the current model that is worse on the same held-back verifications: refused, both figures
        b, hb = _candidate(tmp_path, "b", f1=0.55, parent_f1=0.58, parent=a, bump=2e-3)
        mb = register_model(session, county_code=COUNTY, checkpoint=b, holdout=hb)
        with pytest.raises(PromotionRefusedError) as refused:
            promote_model(session, mb.id, by="boss")
        message = str(refused.value)
        assert "0.5500" in message and "0.5800" in message and f"current model {ma.id}" in message, message
        # a model compared against another parent than the current model: figures not comparable, refused
        with pytest.raises(PromotionRefusedError, match="not on the same held-back verifications"):
            promote_model(session, mw.id, by="boss")
        # a better child is promoted and retires the current one
        c, hc = _candidate(tmp_path, "c", f1=0.71, parent_f1=0.60, parent=a, bump=3e-3)
        mc = register_model(session, county_code=COUNTY, checkpoint=c, holdout=hc)
        promote_model(session, mc.id, by="boss")
        statuses = {m.id: m.status for m in list_models(session, county_code=COUNTY)}
        assert statuses == {ma.id: "retired", mb.id: "registered", mw.id: "registered", mc.id: "promoted"}
        assert current_model(session, COUNTY).replaced_id == ma.id  # type: ignore[union-attr]
        # other counties are not affected
        assert current_model(session, "320115") is None


def test_promote_refuses_a_fine_tune_whose_figures_are_not_comparable(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A --positive-only fine-tune held back one class only: its 'better' figure means nothing (#25 trap 3)."""
    import json

    ckpt, holdout = _candidate(tmp_path, "p", f1=0.9, parent_f1=0.3)
    data = json.loads(holdout.read_text())
    data.update(comparable=False, why_not_comparable="the held-back verifications are all real change")
    holdout.write_text(json.dumps(data))
    with sessions() as session:
        model = register_model(session, county_code=COUNTY, checkpoint=ckpt, holdout=holdout)
        with pytest.raises(PromotionRefusedError, match="not comparable.*all real change"):
            promote_model(session, model.id, by="boss")
        assert current_model(session, COUNTY) is None


def test_promote_refuses_other_bands_and_changed_checkpoints(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    rgb, hr = _candidate(tmp_path, "rgb", f1=0.9, parent_f1=0.4, source="rgb")
    a, ha = _candidate(tmp_path, "a", f1=0.6, parent_f1=0.4)
    with sessions() as session:
        m_rgb = register_model(session, county_code=COUNTY, checkpoint=rgb, holdout=hr)
        ma = register_model(session, county_code=COUNTY, checkpoint=a, holdout=ha)
        with pytest.raises(PromotionRefusedError) as refused:  # parent s2-rgbn takes other bands
            promote_model(session, m_rgb.id, by="boss")
        assert "expected ['B04', 'B03', 'B02', 'B08'], given ['R', 'G', 'B']" in str(refused.value), refused.value
        a.write_bytes(a.read_bytes() + b"\0")  # the weights changed after registration
        with pytest.raises(PromotionRefusedError, match="changed since registration"):
            promote_model(session, ma.id, by="boss")
        assert current_model(session, COUNTY) is None


def test_rollback_makes_the_previous_version_current(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    a, ha = _candidate(tmp_path, "a", f1=0.6, parent_f1=0.4)
    b, hb = _candidate(tmp_path, "b", f1=0.7, parent_f1=0.6, parent=a, bump=2e-3)
    with sessions() as session:
        with pytest.raises(NotFoundError, match="nothing to roll back"):
            rollback_model(session, COUNTY, by="boss")
        ma = register_model(session, county_code=COUNTY, checkpoint=a, holdout=ha)
        mb = register_model(session, county_code=COUNTY, checkpoint=b, holdout=hb)
        promote_model(session, ma.id, by="boss")
        promote_model(session, mb.id, by="boss")
        retired, now = rollback_model(session, COUNTY, by="ops")
        assert (retired.id, retired.status) == (mb.id, "retired")
        assert now is not None and (now.id, now.status) == (ma.id, "promoted")
        assert current_model(session, COUNTY).id == ma.id  # type: ignore[union-attr]
        retired, now = rollback_model(session, COUNTY, by="ops")  # the first one replaced nothing
        assert retired.id == ma.id and now is None and current_model(session, COUNTY) is None
        events = [(e.model_id, e.event) for e in list_model_events(session, county_code=COUNTY)]
        assert events[-3:] == [(mb.id, "rolled_back"), (ma.id, "promoted"), (ma.id, "rolled_back")]


def test_the_store_allows_one_promoted_model_per_county(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    a, ha = _candidate(tmp_path, "a", f1=0.6, parent_f1=0.4)
    b, hb = _candidate(tmp_path, "b", f1=0.6, parent_f1=0.4, bump=2e-3)
    with sessions() as session:
        ids = [register_model(session, county_code=COUNTY, checkpoint=c, holdout=h).id for c, h in ((a, ha), (b, hb))]
        with pytest.raises(IntegrityError):
            session.execute(update(ModelVersion).where(ModelVersion.id.in_(ids)).values(status="promoted"))
            session.flush()
        session.rollback()


@pytest.mark.parametrize("first_promotion", [True, False])
def test_two_promotions_at_once_one_wins(
    sessions: sessionmaker[Session], tmp_path: Path, first_promotion: bool
) -> None:
    """Two people looked at the same current model and promote two better candidates at the same moment."""
    base, hbase = _candidate(tmp_path, "base", f1=0.5, parent_f1=0.4)
    with sessions() as session:
        mbase = register_model(session, county_code=COUNTY, checkpoint=base, holdout=hbase)
        if not first_promotion:
            promote_model(session, mbase.id, by="boss")
        parent = PARENT if first_promotion else base
        ids = []
        for k in range(2):
            c, h = _candidate(tmp_path, f"c{k}", f1=0.8, parent_f1=0.5, parent=parent, bump=(k + 2) * 1e-3)
            ids.append(register_model(session, county_code=COUNTY, checkpoint=c, holdout=h).id)
        seen = current_model(session, COUNTY)
        seen_id = seen.id if seen is not None else None
    barrier = threading.Barrier(2)
    outcome: dict[int, Any] = {}

    def promote(model_id: int) -> None:
        with sessions() as own:
            barrier.wait()
            try:
                outcome[model_id] = promote_model(own, model_id, by=f"user{model_id}",
                                                  expected_current_id=seen_id).status
            except ConflictError as exc:
                outcome[model_id] = exc

    threads = [threading.Thread(target=promote, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    wins = [i for i, o in outcome.items() if o == "promoted"]
    losses = [o for o in outcome.values() if isinstance(o, ConflictError)]
    assert len(wins) == 1 and len(losses) == 1, outcome
    assert "changed meanwhile" in str(losses[0])
    with sessions() as session:
        assert current_model(session, COUNTY).id == wins[0]  # type: ignore[union-attr]
        promoted = [m for m in list_models(session, county_code=COUNTY) if m.status == "promoted"]
        assert len(promoted) == 1


def test_warnings_record_the_registered_model_that_raised_them(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    a, ha = _candidate(tmp_path, "a", f1=0.6, parent_f1=0.4)
    grid = LocalFrame((114.0, 22.3), 4526)
    patches = patches_frame([grid.rect(0, 0, 100, 100), grid.rect(1000, 0, 80, 80)], grid.crs,
                            t1="2025-03-01", t2="2025-09-01")
    warnings = classify(patches, gpd.GeoDataFrame({"permit_no": []}, geometry=[], crs=grid.crs), None,
                        t1="2025-03-01", t2="2025-09-01")
    before = write_scene(tmp_path / "b.tif", seed=1)
    after = write_scene(tmp_path / "a.tif", seed=2)
    with sessions() as session:
        model = register_model(session, county_code=COUNTY, checkpoint=a, holdout=ha)
        prov = RunProvenance(scene_before=str(before), scene_before_sha256=file_sha256(before),
                             scene_after=str(after), scene_after_sha256=file_sha256(after),
                             detector=model.detector, model_sha256=model.checkpoint_sha256)
        saved = save_warnings(session, warnings, period="2025Q3", county_code=COUNTY, patches=patches,
                              provenance=prov)
        assert saved.model_version_id == model.id
        for wid in saved.created:
            w = get_warning(session, wid)
            assert (w.detector, w.model_sha256, w.model_version_id) == (model.detector, model.checkpoint_sha256,
                                                                         model.id)
        # the same weights are a different (unregistered) model in another county
        other = save_warnings(session, warnings, period="2025Q3", county_code="320115", patches=patches,
                              provenance=prov)
        assert other.model_version_id is None
        assert get_warning(session, other.created[0]).model_sha256 == model.checkpoint_sha256


# ------------------------------------------------------------------------------------------------- CLI


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "cspon_rs.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_models_cli_and_detect_with_the_county_model(tmp_path: Path) -> None:
    from cspon_rs.store.db import open_store

    db = sqlite_url(tmp_path / "store.sqlite")
    open_store(db).kw["bind"].dispose()
    a, ha = _candidate(tmp_path, "a", f1=0.6, parent_f1=0.4)
    worse, hw = _candidate(tmp_path, "w", f1=0.3, parent_f1=0.4, bump=5e-3)
    reg = _cli("models", "register", "--db", db, "--county", COUNTY, "--holdout", ha, "--by", "lab")
    assert reg.returncode == 0 and "registered model 1" in reg.stdout, reg.stderr
    assert _cli("models", "register", "--db", db, "--county", COUNTY, "--holdout", hw, "--checkpoint",
                worse).returncode == 0
    refused = _cli("models", "promote", "--db", db, "--id", "2", "--by", "boss")
    assert refused.returncode == 2 and "0.3000" in refused.stderr and "0.4000" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1  # one line, no traceback
    ok = _cli("models", "promote", "--db", db, "--id", "1", "--by", "boss")
    assert ok.returncode == 0 and "promoted model 1" in ok.stdout and "0.6000 beats 0.4000" in ok.stdout, ok.stderr
    listed = _cli("models", "list", "--db", db, "--county", COUNTY)
    assert "promoted" in listed.stdout and "registered" in listed.stdout

    before = write_scene(tmp_path / "scene" / "before_20240101.tif", seed=1)
    after = write_scene(tmp_path / "scene" / "after_20240601.tif", seed=2, bright=True)
    out = tmp_path / "det"
    det = _cli("detect", "--before", before, "--after", after, "--out", out, "--db", db, "--county", COUNTY,
               "--device", "cpu", "--no-progress", "--min-area", "0", "--no-suppress")
    assert det.returncode == 0, det.stderr
    assert f"model: county {COUNTY}'s promoted model 1" in det.stdout, det.stdout
    info = pyogrio.read_info(out / "change_patches.gpkg")
    assert {"scene_before_sha256", "scene_after_sha256", "model_sha256"} <= set(info["fields"])
    detected = pyogrio.read_dataframe(out / "change_patches.gpkg")
    assert len(detected) > 0  # the bright square is found
    assert set(detected["model_sha256"]) == {file_sha256(a)}
    assert set(detected["scene_before"]) == {str(before.resolve())}
    assert set(detected["scene_after_sha256"]) == {file_sha256(after)}
    assert "model sha256   " + file_sha256(a) in det.stdout
    # --checkpoint wins over the county model; --db without --county is an error
    explicit = _cli("detect", "--before", before, "--after", after, "--out", tmp_path / "det2", "--db", db,
                    "--county", COUNTY, "--checkpoint", "spectral", "--no-progress")
    assert explicit.returncode == 0 and "given explicitly" in explicit.stdout, explicit.stderr
    half = _cli("detect", "--before", before, "--after", after, "--out", tmp_path / "det3", "--db", db)
    assert half.returncode == 2 and "--db and --county go together" in half.stderr

    back = _cli("models", "rollback", "--db", db, "--county", COUNTY, "--by", "ops")
    assert back.returncode == 0 and "no model is promoted now" in back.stdout, back.stderr
    again = _cli("models", "rollback", "--db", db, "--county", COUNTY, "--by", "ops")
    assert again.returncode == 2 and "nothing to roll back" in again.stderr
    bad = _cli("models", "list", "--db", "nonsense")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: not a database URL: 'nonsense' (e.g. sqlite:///warnings.sqlite)"]
