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


_LONG = "a" * 300
_UNREACHABLE = "postgresql+psycopg://u:secret@127.0.0.1:1/x"


@pytest.mark.parametrize(
    "args,expected",
    [
        *[([*cmd, "--db", url], "in-memory SQLite database would vanish")
          for cmd in (["users", "add", "--name", "m", "--role", "admin"], ["serve", "--no-worker"], ["worker"])
          for url in ("sqlite:///", "sqlite://", "sqlite:///:memory:")],
        (["serve", "--no-worker", "--db", "sqlite:///%00"], "NUL byte"),
        (["users", "add", "--name", "n", "--role", "admin", "--db", "sqlite:///x%00.db"], "NUL byte"),
        (["users", "add", "--name", "l", "--role", "admin", "--db", f"sqlite:///{{tmp}}/{_LONG}.db"], "cannot use"),
        (["worker", "--db", f"sqlite:///{{tmp}}/{_LONG}.db"], "cannot use"),
        (["users", "add", "--name", _LONG, "--role", "admin", "--db", "sqlite:///{tmp}/ok.db"], "1 to 200"),
        (["patrol", "--db", _UNREACHABLE, "--period", "2018Q1", "--start", "114,22", "--out", "{tmp}/p.gpx"],
         "cannot open the database"),
        (["export", "--db", _UNREACHABLE, "--period", "2018Q1", "--county", "810000", "--out", "{tmp}/e"],
         "cannot open the database"),
    ],
    ids=[*[f"{c}-{u}" for c in ("users-add", "serve", "worker") for u in ("empty", "memory-url", "memory-name")],
         "nul", "nul-users", "long-file", "long-file-worker", "long-user-name", "patrol-unreachable",
         "export-unreachable"],
)
def test_odd_db_arguments_one_line_exit_2(args: list[str], expected: str, tmp_path: Path) -> None:
    argv = [a.format(tmp=tmp_path) for a in args]
    run = subprocess.run([sys.executable, "-m", "cspon_rs.cli", *argv], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    assert run.returncode == 2, (run.returncode, lines[-5:])
    assert len(lines) == 1 and expected in lines[0], lines[-5:]
    assert "secret" not in lines[0] and "Traceback" not in lines[0]


def test_photo_tif_is_not_created_as_a_database(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "cspon_rs.cli", "users", "add", "--name", "p", "--role", "admin",
                          "--db", "sqlite:///photo.tif"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 2 and "refusing to create a database named photo.tif" in run.stderr, run.stderr
    assert not (tmp_path / "photo.tif").exists()
