"""Bad database URLs given to serve / worker / users add: one line naming the problem, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "args,expected",
    [
        (["serve", "--db", "postgres://x", "--no-worker"], "unsupported database 'postgres'"),
        (["serve", "--db", "sqlite:///{tif}", "--no-worker"], "is not a SQLite database"),
        (["users", "add", "--name", "a", "--role", "admin", "--db", "mysql://x"], "unsupported database 'mysql'"),
        (["worker", "--db", "postgres://x"], "postgresql+psycopg://"),
        (["serve", "--db", "postgresql+psycopg://u:secret@127.0.0.1:1/x", "--no-worker"], "cannot open the database"),
        (["users", "add", "--name", "b", "--role", "bureau", "--db", "sqlite:///{new}"], "needs a county"),
    ],
    ids=["postgres-scheme", "tif-as-sqlite", "mysql", "worker-postgres", "unreachable", "no-county"],
)
def test_one_line_exit_2(args: list[str], expected: str, tmp_path: Path) -> None:
    tif = tmp_path / "text.tif"
    tif.write_text("this is a text file, not a database")
    argv = [a.format(tif=tif, new=tmp_path / "new.db") for a in args]
    run = subprocess.run([sys.executable, "-m", "cspon_rs.cli", *argv], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    assert run.returncode == 2, (run.returncode, lines[-5:])
    assert len(lines) == 1 and expected in lines[0], lines[-5:]
    assert "secret" not in lines[0] and "Traceback" not in lines[0]
