"""Warning rules: classify change patches against permits and control lines.

Modules: :mod:`~cspon_rs.rules.config` (thresholds, field mapping), :mod:`~cspon_rs.rules.inputs` (loading
bureau layers), :mod:`~cspon_rs.rules.engine` (``classify``), :mod:`~cspon_rs.rules.pipeline`
(``run_warning_pipeline``), :mod:`~cspon_rs.rules.cli` (``cspon-rs warn`` / ``patrol``). The main entry
points are re-exported lazily (so ``import cspon_rs.rules`` stays cheap).
"""

from __future__ import annotations

from typing import Any

__all__ = ["classify", "load_control_lines", "load_permits", "load_townships", "run_warning_pipeline"]

_LAZY = {
    "classify": "cspon_rs.rules.engine",
    "load_control_lines": "cspon_rs.rules.inputs",
    "load_permits": "cspon_rs.rules.inputs",
    "load_townships": "cspon_rs.rules.inputs",
    "run_warning_pipeline": "cspon_rs.rules.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cspon_rs.rules' has no attribute {name!r}")
