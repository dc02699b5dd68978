"""Desk triage → county classifier re-fit, from the command line on the bundled demo (issue 21, "Tests"):

demo → a desk reviewer decides every warning from the sample's OSCD label (real change → 疑似违法, else 误报)
→ `labels export` carries them with source `desk` → `models refit` fits the county classifier from the stored
patch features, scores it against the shipped one on held-back labels and promotes it only when better →
`models rollback` re-scores the open warnings with the shipped classifier again.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

COUNTY, PERIOD = "810000", "2018Q1"


def _cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cspon_rs.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _desk_from_truth(db_url: str, label_tif: Path) -> dict[str, int]:
    """Decide every new warning at the desk: 疑似违法 where it touches the label, else 误报."""
    import rasterio
    from rasterio.features import geometry_mask

    from cspon_rs.store import crud
    from cspon_rs.store.db import open_store
    from cspon_rs.store.triage import decide

    sessions = open_store(db_url)
    counts = {"illegal": 0, "false_alarm": 0}
    with rasterio.open(label_tif) as src, sessions() as session:
        truth = src.read(1) > 0
        records = [r for r in crud.list_warnings(session, county_code=COUNTY, period=PERIOD, limit=1000)
                   if not r.source_key.startswith("permit:")]
        frame = crud.warnings_frame(records).to_crs(src.crs)
        for rec, geom in zip(records, frame.geometry, strict=True):
            inside = ~geometry_mask([geom], out_shape=truth.shape, transform=src.transform, all_touched=True)
            decision = "illegal" if (truth & inside).any() else "false_alarm"
            decide(session, rec.id, decision, by="desk-reviewer")
            counts[decision] += 1
    sessions.kw["bind"].dispose()
    return counts


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "data_samples" / "hongkong").is_dir(),
                    reason="bundled sample missing")
def test_desk_labels_refit_and_rollback_from_the_command_line(sample_dir: Path, tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    run = _cli("demo", "--out", str(demo))
    assert run.returncode == 0, run.stderr
    assert "warning classifier:" in run.stdout  # the shipped s2-rgbn classifier ran
    db = f"sqlite:///{demo / 'warnings.sqlite'}"

    from cspon_rs.store.db import open_store
    from cspon_rs.training.county_refit import label_counts

    counts = _desk_from_truth(db, sample_dir / "label.tif")
    assert counts["illegal"] >= 5 and counts["false_alarm"] >= 5, counts
    with open_store(db)() as session:
        desk, field = label_counts(session, COUNTY)
    assert (desk, field) == (sum(counts.values()), 0)  # every decided warning kept its patch features

    labels = tmp_path / "labels.gpkg"
    run = _cli("labels", "export", "--db", db, "--county", COUNTY, "--out", str(labels))
    assert run.returncode == 0, run.stderr
    import geopandas as gpd

    layer = gpd.read_file(labels)
    assert set(layer["source"]) == {"desk"} and len(layer) >= sum(counts.values()) - 2

    run = _cli("models", "refit", "--db", db, "--county", COUNTY, "--out", str(tmp_path / "county_models"),
               "--by", "bureau")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert f"re-fit from {sum(counts.values())} labels" in out, out
    figures = re.findall(r"(?:candidate|parent|average_precision) ?([01]\.\d{3,4})", out)
    assert len(figures) >= 2, out  # both held-back figures are in the message
    listed = _cli("models", "list", "--db", db, "--county", COUNTY)
    assert listed.returncode == 0
    if "promoted for county" in out:
        assert "promoted" in listed.stdout
        run = _cli("models", "rollback", "--db", db, "--county", COUNTY, "--by", "admin")
        assert run.returncode == 0, run.stderr
        assert "no model is promoted now" in run.stdout
    else:
        assert "not promoted" in out and "registered" in listed.stdout
    # county checkpoints are real checkpoints with the county classifier beside them
    written = list((tmp_path / "county_models" / COUNTY).glob("*/*.classifier.json"))
    assert len(written) == 1 and written[0].with_name(written[0].name.replace(".classifier.json", ".safetensors")
                                                      ).is_file()
