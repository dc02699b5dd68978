"""The installed package: one top-level name in the wheel, a CLI with --help everywhere, clean errors."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "cspon_rs.cli"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_wheel_has_only_the_cspon_rs_top_level_package(repo_root: Path, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(repo_root)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    (wheel,) = tmp_path.glob("cspon_rs-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"cspon_rs", wheel.name.split("-py3")[0].replace("cspon_rs-", "cspon_rs-") + ".dist-info"}
    for generic in ("api", "models", "training", "inference", "configs"):
        assert generic not in top_level
    # The design-card folders travel inside the package, with the shipped checkpoint and configs.
    for module in ("cspon_rs/models/card.py", "cspon_rs/inference/__init__.py", "cspon_rs/training/__init__.py",
                   "cspon_rs/api/__init__.py", "cspon_rs/errors.py", "cspon_rs/cli.py"):
        assert module in names, module
    shipped = [n for n in names if n.startswith("cspon_rs/models/checkpoints/") and n.endswith(".safetensors")]
    if (repo_root / "models" / "checkpoints").glob("*.safetensors"):
        assert len(shipped) == len(list((repo_root / "models" / "checkpoints").glob("*.safetensors")))
    assert len([n for n in names if n.startswith("cspon_rs/configs/") and n.endswith(".yaml")]) == len(
        list((repo_root / "configs").glob("*.yaml"))
    )


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
