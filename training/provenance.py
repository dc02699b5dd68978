"""Provenance of a training run and readable artefacts.

What a card records so that a checkpoint can be traced and redone (:func:`run_provenance`): the cspon-rs
version and git commit, torch version, the resolved config, the sha256 of every data file read, the parent
checkpoint's sha256 and the seed. Files written by training are readable by others (mode 0644 less the
umask, like ``open()``), not 0600 as ``tempfile.mkstemp`` leaves them.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "data_file_hashes", "git_commit", "make_readable", "run_provenance"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_readable(path: str | Path) -> Path:
    """Give a written file mode 0666 less the umask (0644 with the usual 022), as ``open()`` would."""
    p = Path(path)
    os.chmod(p, 0o666 & ~_umask())
    return p


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (temporary file in the same folder + rename), mode 0644."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        make_readable(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def git_commit(folder: str | Path | None = None) -> str | None:
    """The git commit of the source tree cspon-rs runs from (``+dirty`` when it has changes), or None."""
    where = Path(folder) if folder is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def data_file_hashes(paths: Iterable[str | Path]) -> dict[str, str]:
    """``{path: sha256}`` of existing files (folders and missing paths are left out)."""
    from cspon_rs.geo.files import file_sha256

    out: dict[str, str] = {}
    for p in sorted({str(Path(x)) for x in paths}):
        if Path(p).is_file():
            out[p] = file_sha256(p)
    return out


def _source_files(config: Any) -> list[Path]:
    """Data files a config reads: pair rasters and label files, split lists, LEVIR/OSCD folders' files."""
    from cspon_rs.training.datasets import _IMAGE_SUFFIXES

    files: list[Path] = []
    for src in config.data.sources():
        root = Path(src.root)
        if src.kind == "geotiff_pairs":
            for spec in src.pairs:
                for f in (spec.before, spec.after, spec.label, spec.label_vector, spec.aoi):
                    if f is not None:
                        files.append(f if f.is_absolute() else root / f)
        elif root.is_dir():
            files += [f for f in sorted(root.rglob("*")) if f.suffix.lower() in (*_IMAGE_SUFFIXES, ".txt")]
        for split in (src.train, src.val, src.test):
            if isinstance(split, str):
                files.append(root / split)
    return files


def run_provenance(config: Any, *, parent: str | Path | None = None, max_files: int = 2000) -> dict[str, Any]:
    """What a card's ``training_data.provenance`` records about a run.

    Args:
        config: The resolved :class:`~cspon_rs.training.config.TrainConfig`.
        parent: Checkpoint the run starts from (its weights' sha256 is recorded).
        max_files: Hash at most this many data files (large folders: the count and the first ones).
    """
    import platform

    import torch

    from cspon_rs import __version__
    from cspon_rs.geo.files import file_sha256

    files = _source_files(config)
    hashes = data_file_hashes(files[:max_files])
    info: dict[str, Any] = {
        "cspon_rs_version": __version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "seed": config.optim.seed,
        "config": config.model_dump(mode="json"),
        "data_files": hashes,
        "data_files_total": len(files),
    }
    if parent is not None:
        info["parent_checkpoint"] = str(parent)
        info["parent_sha256"] = file_sha256(parent) if Path(parent).is_file() else None
    return info
