"""Run mypy (strict, pyproject settings) on the package as it is installed, and report repo paths.

The design-card folders (``models/``, ``inference/``, ...) become ``cspon_rs.<name>`` through setuptools'
``package-dir``; mypy cannot follow that mapping (nor the import hook of an editable install). This script
lays the package out as the wheel does, under ``build/typecheck/cspon_rs`` (copies of the ``.py`` files, with
their timestamps so mypy's cache stays valid), runs ``mypy -p cspon_rs`` there and rewrites the paths in its
output back to the files you edit. Exit status is mypy's.

Usage: ``python ci/typecheck.py`` (what ``make typecheck`` runs).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "typecheck"


def package_dirs() -> dict[str, Path]:
    """``{"cspon_rs": <repo>/cspon_rs, "cspon_rs.models": <repo>/models, ...}`` from pyproject.toml."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    mapped = {name: ROOT / folder for name, folder in setuptools.get("package-dir", {}).items() if name}
    return {"cspon_rs": ROOT / "cspon_rs", **mapped}


def lay_out() -> dict[Path, Path]:
    """Copy every package's Python files into TREE; returns {folder in TREE: folder in the repo}."""
    shutil.rmtree(TREE / "cspon_rs", ignore_errors=True)
    origins: dict[Path, Path] = {}
    for name, source in sorted(package_dirs().items()):
        target = TREE.joinpath(*name.split("."))
        origins[target] = source
        for path in source.rglob("*"):
            if path.suffix in {".py", ".pyi"} or path.name == "py.typed":
                relative = path.relative_to(source)
                if relative.parts[0] in {"__pycache__", "static"}:
                    continue
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / relative)
    return origins


def main() -> int:
    origins = lay_out()
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(ROOT / ".mypy_cache"), "-p", "cspon_rs"],
        cwd=TREE, capture_output=True, text=True,
    )
    # Longest prefixes first: cspon_rs/inference/... belongs to ./inference, not ./cspon_rs.
    prefixes = sorted(
        ((str(tree.relative_to(TREE)) + "/", str(repo.relative_to(ROOT)) + "/") for tree, repo in origins.items()),
        key=lambda pair: -len(pair[0]),
    )
    pattern = re.compile("(?m)^(?:" + "|".join(re.escape(tree) for tree, _ in prefixes) + ")")
    lookup = dict(prefixes)
    for stream, text in ((sys.stdout, result.stdout), (sys.stderr, result.stderr)):
        stream.write(pattern.sub(lambda m: lookup[m.group(0)], text))
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
