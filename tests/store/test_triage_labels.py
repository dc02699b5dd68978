"""`cspon-rs labels export` includes desk triage decisions with their source (field checks override them), on a
real store filled by the warning pipeline with real GeoTIFF scenes, read back from the GeoPackage."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio
from test_labels_export import COUNTY, PERIOD, _cli, _run

from cspon_rs.geo.files import file_sha256
from cspon_rs.store.crud import assign_warning, list_warnings, record_verification
from cspon_rs.store.db import open_store
from cspon_rs.store.labels import LABEL_COLUMNS, LABEL_LAYER
from cspon_rs.store.triage import decide


def test_labels_export_includes_desk_labels_with_their_source(tmp_path: Path) -> None:
    run = _run(tmp_path)
    sessions = open_store(run["db"])
    with sessions() as session:
        rows = list_warnings(session, period=PERIOD, county_code=COUNTY, limit=None)
        w_false, w_field, w_unsure, w_legal = (w.id for w in rows if not w.source_key.startswith("permit:"))
        permit = next(w.id for w in rows if w.source_key.startswith("permit:"))
        d_false = decide(session, w_false, "false_alarm", by="li").id
        decide(session, w_field, "illegal", by="li")  # desk: illegal ... field: no real change
        decide(session, w_unsure, "unsure", by="li")  # not a label
        d_legal = decide(session, w_legal, "legal", by="wang").id
        d_permit = decide(session, permit, "illegal", by="li").id  # 批而不建: no change patch to label
        w = assign_warning(session, w_field, team="team-1")
        v_field = record_verification(session, w_field, result="false_change", expected_version=w.version,
                                      by="team-1", notes="shadow").id
    sessions.kw["bind"].dispose()

    out = tmp_path / "labels.gpkg"
    proc = _cli("labels", "export", "--db", run["db"], "--county", COUNTY, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 3 labels" in proc.stdout and "1 field, 2 desk" in proc.stdout, proc.stdout
    assert "1 desk decisions skipped" in proc.stdout and "0 verifications skipped" in proc.stdout
    assert proc.stderr.strip() == f"skipped desk decision {d_permit} (warning {permit}): 批而不建 permit warning: " \
                                  "no detected change patch to label"
    info = pyogrio.read_info(out, layer=LABEL_LAYER)
    assert list(info["fields"]) == list(LABEL_COLUMNS)
    labels = gpd.read_file(out, layer=LABEL_LAYER).set_index("warning_id")
    assert sorted(labels.index) == sorted([w_false, w_field, w_legal])
    field = labels.loc[w_field]  # the field check overrides the desk's "illegal"
    assert (field["source"], field["label"], field["result"], field["verification_id"]) == (
        "field", 0, "false_change", v_field)
    assert field["decision_id"] is None or field["decision_id"] != field["decision_id"]  # null
    false, legal = labels.loc[w_false], labels.loc[w_legal]
    assert (false["source"], false["label"], false["result"], false["decision_id"]) == ("desk", 0, "false_alarm",
                                                                                          d_false)
    assert (legal["source"], legal["label"], legal["result"], legal["decision_id"]) == ("desk", 1, "legal", d_legal)
    assert legal["verified_by"] == "wang" and "desk triage" in legal["reason"]
    assert legal["scene_after_sha256"] == file_sha256(run["after"]) and legal["detector"] == "synthetic"

    from cspon_rs.training.verified import read_verified_labels

    assert sorted(read_verified_labels(out)["label"].tolist()) == [0, 0, 1]
