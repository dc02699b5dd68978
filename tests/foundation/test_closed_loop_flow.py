"""The whole closed loop from the command line on the bundled demo (issue 12, "done when"):

demo -> field teams verify some warnings (truth from the sample's OSCD label) -> `labels export` ->
`train --labels` (a short seeded fine-tune) -> `models register` / `models promote` -> the next `detect`
uses the county's model -> its warnings record that version -> `models rollback`.

The parent of the fine-tune is the shipped `s2-rgbn`; 30 verifications (9 held back) and a short seeded
fine-tune adapt it to the scene, and the held-back figures decide the promotion. The API side of the same loop
is tests/api/test_model_registry_api.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

COUNTY, PERIOD = "810000", "2018Q1"
N_VERIFIED = 30  # the demo raises 31 warnings with the shipped warning classifier


def _cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cspon_rs.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _verify_from_truth(db_url: str, label_tif: Path, n: int) -> dict[str, int]:
    """Assign and verify the n highest-priority warnings: real change where they touch the OSCD label."""
    import rasterio
    from rasterio.features import geometry_mask

    from cspon_rs.store import crud
    from cspon_rs.store.db import open_store

    sessions = open_store(db_url)
    counts = {"illegal": 0, "false_change": 0}
    with rasterio.open(label_tif) as src, sessions() as session:
        truth = src.read(1) > 0  # OSCD cm: 0/1 on the sample
        crs, tr = src.crs, src.transform
        records = crud.list_warnings(session, county_code=COUNTY, period=PERIOD, limit=n)
        frame = crud.warnings_frame(records).to_crs(crs)
        for rec, geom in zip(records, frame.geometry, strict=True):
            inside = ~geometry_mask([geom], out_shape=truth.shape, transform=tr, all_touched=True)
            result = "illegal" if (truth & inside).any() else "false_change"
            rec = crud.assign_warning(session, rec.id, team="team-1", by="bureau")
            crud.record_verification(session, rec.id, result=result, expected_version=rec.version, by="team-1")
            counts[result] += 1
        session.commit()
    return counts


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "data_samples" / "hongkong").is_dir(),
                    reason="bundled sample missing")
def test_closed_loop_from_the_command_line(sample_dir: Path, tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    run = _cli("demo", "--out", str(demo))
    assert run.returncode == 0, run.stderr
    db = f"sqlite:///{demo / 'warnings.sqlite'}"

    counts = _verify_from_truth(db, sample_dir / "label.tif", n=N_VERIFIED)
    assert counts["illegal"] >= 4 and counts["false_change"] >= 4, counts

    labels = tmp_path / "verified.gpkg"
    run = _cli("labels", "export", "--db", db, "--county", COUNTY, "--out", str(labels))
    assert run.returncode == 0, run.stderr
    import geopandas as gpd

    layer = gpd.read_file(labels)
    skipped = int(re.search(r"(\d+) verifications skipped", run.stdout + run.stderr).group(1))  # type: ignore[union-attr]
    assert skipped <= 2 and len(layer) == N_VERIFIED - skipped and set(layer["label"]) == {0, 1}  # 批而不建: no pixels
    assert layer["scene_before"].map(lambda p: Path(p).is_absolute()).all()

    ft = tmp_path / "ft"  # 9 of the 30 verifications are held back
    run = _cli("train", "--labels", str(labels), "--init-from", "s2-rgbn", "--out", str(ft), "--epochs", "4",
               "--lr", "1e-3")
    assert run.returncode == 0, run.stderr
    holdout = json.loads((ft / "holdout.json").read_text())
    assert holdout["candidate"]["f1"] > holdout["parent"]["f1"], holdout  # else promotion is refused below

    run = _cli("models", "register", "--db", db, "--county", COUNTY, "--holdout", str(ft / "holdout.json"),
               "--by", "researcher")
    assert run.returncode == 0, run.stderr
    run = _cli("models", "promote", "--db", db, "--id", "1", "--by", "admin")
    assert run.returncode == 0, run.stderr

    # The next run for this county uses the promoted model and its warnings record that version.
    det = tmp_path / "next"
    befores = sorted(sample_dir.glob("before*.tif"))
    afters = sorted(sample_dir.glob("after*.tif"))
    run = _cli("detect", "--before", str(befores[0]), "--after", str(afters[0]), "--out", str(det / "detection"),
               "--db", db, "--county", COUNTY)
    assert run.returncode == 0, run.stderr
    assert "promoted model" in run.stdout + run.stderr
    run = _cli("warn", "--changes", str(det / "detection" / "change_patches.gpkg"), "--permits",
               str(sample_dir / "permits.gpkg"), "--period", "2018Q2", "--county", COUNTY, "--out", str(det),
               "--db", db)
    assert run.returncode == 0, run.stderr
    from cspon_rs.store import crud
    from cspon_rs.store.db import open_store

    with open_store(db)() as session:
        fresh = crud.list_warnings(session, county_code=COUNTY, period="2018Q2", limit=1000)
        assert fresh and {w.model_version_id for w in fresh} == {1}

    run = _cli("models", "rollback", "--db", db, "--county", COUNTY, "--by", "admin")
    assert run.returncode == 0, run.stderr
    listed = _cli("models", "list", "--db", db, "--county", COUNTY, "--json")
    versions = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert listed.returncode == 0 and versions[0]["status"] != "promoted", versions
