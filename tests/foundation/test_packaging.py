"""The installed package: one top-level name in the wheel, a CLI with --help everywhere, clean errors."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "cspon_rs.cli"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


MAPPED = ("models", "training", "inference", "api", "configs")


def _tracked(repo_root: Path, folder: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", folder], cwd=repo_root, capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if line]


def test_wheel_has_only_the_cspon_rs_top_level_package(repo_root: Path, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(repo_root)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    (wheel,) = tmp_path.glob("cspon_rs-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"cspon_rs", wheel.name.split("-py3")[0] + ".dist-info"}
    # Every tracked file of the design-card folders travels inside the package (code, checkpoints, configs,
    # web assets): a subpackage missing from pyproject's `packages` would be dropped here.
    for folder in MAPPED:
        for tracked in _tracked(repo_root, folder):
            if tracked.endswith((".md", ".sh")):
                continue
            assert f"cspon_rs/{tracked}" in names, tracked
    for tracked in _tracked(repo_root, "cspon_rs"):
        if tracked.endswith(".py"):
            assert tracked in names, tracked


def test_repo_has_no_symlinks(repo_root: Path) -> None:
    out = subprocess.run(["git", "ls-files", "-s"], cwd=repo_root, capture_output=True, text=True, check=True)
    links = [line.split("\t")[1] for line in out.stdout.splitlines() if line.startswith("120000")]
    assert links == []


def test_editable_install_maps_the_design_card_folders(repo_root: Path, tmp_path: Path) -> None:
    """An editable wheel (PEP 660, what `pip install -e .` builds) imports cspon_rs.<folder> from ./<folder>."""
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    build = (
        "import sys, setuptools.build_meta as b; "
        f"sys.stdout.write(b.build_editable({str(wheel_dir)!r}))"
    )
    wheel_dir.mkdir()
    made = subprocess.run(
        [sys.executable, "-c", build], cwd=repo_root, capture_output=True, text=True, timeout=600, check=True
    )
    zipfile.ZipFile(wheel_dir / made.stdout.strip().splitlines()[-1]).extractall(site)
    probe = (
        "import site, sys, importlib.resources as r; "
        f"sys.path.append({sysconfig.get_paths()['purelib']!r}); "
        f"site.addsitedir({str(site)!r}); "
        "import cspon_rs.inference.detect, cspon_rs.api.routers.map, cspon_rs.models.checkpoint as c; "
        "print(cspon_rs.inference.detect.__file__); print(cspon_rs.api.routers.map.__file__); "
        "print(c.shipped_checkpoint('rgb').is_file()); "
        "print(r.files('cspon_rs.configs').joinpath('rules_default.yaml').is_file())"
    )
    # Run outside the repo with -S: the venv's packages are on sys.path but its .pth files (and with them the
    # venv's own editable finder) are not processed, so only the freshly built editable wheel can map.
    env = {"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    detect, map_router, checkpoint_ok, config_ok = result.stdout.split()
    assert Path(detect) == repo_root / "inference" / "detect.py"
    assert Path(map_router) == repo_root / "api" / "routers" / "map.py"
    assert (checkpoint_ok, config_ok) == ("True", "True")


def test_every_subcommand_has_help() -> None:
    top = run_cli("--help")
    assert top.returncode == 0, top.stderr
    commands = []
    in_commands = False
    for line in top.stdout.splitlines():
        if "Commands" in line:
            in_commands = True
            continue
        if in_commands and line.startswith("│ ") and line[2:3].strip():
            commands.append(line[2:].split()[0])
    assert {"version", "demo"} <= set(commands), top.stdout
    for command in commands:
        result = run_cli(command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage" in result.stdout, command


def test_version_prints_package_version() -> None:
    import cspon_rs

    result = run_cli("version")
    assert result.returncode == 0
    assert f"cspon-rs {cspon_rs.__version__}" in result.stdout


@pytest.mark.parametrize("folder_kind", ["missing", "incomplete"])
def test_demo_without_sample_fails_with_one_clear_line(tmp_path: Path, folder_kind: str) -> None:
    data = tmp_path / "nowhere"
    if folder_kind == "incomplete":
        data.mkdir()
        (data / "before_20160927.tif").write_bytes(b"")
    result = run_cli("demo", "--data", str(data), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(data) in lines[0]
    assert not (tmp_path / "out" / "quicklook.png").exists()
