"""What radiometric normalisation and the warning classifier add to ``detect`` end to end (issue #20 target:
at most 15 % slower), measured in one run on one scene.

The scene is the Hong Kong demo pair mirrored to ``--size`` px (``inference_benchmark.make_scene_pair``), run
by the shipped ``s2-rgbn`` checkpoint (ONNX Runtime on the CPU) in one process, three ways, interleaved and
repeated ``--repeats`` times (the median is reported):

* ``before``: ``radiometry="none"``, ``classifier="none"`` (what detect did before this round);
* ``+ radiometry``: the card's radiometric normalisation, no classifier;
* ``+ classifier``: both (the default).

Usage (repository root; about 3 min on 2 cores)::

    .venv/bin/python benchmarks/warning_overhead.py [--size 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from inference_benchmark import make_scene_pair  # noqa: E402

MODES = {
    "before": {"radiometry": "none", "classifier": "none"},
    "+ radiometry": {"classifier": "none"},
    "+ classifier": {},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from cspon_rs.config import load_yaml_config
    from cspon_rs.inference.config import DetectConfig
    from cspon_rs.inference.detect import detect_pair

    cfg = load_yaml_config(REPO / "configs" / "detect.yaml", DetectConfig)
    base = {**cfg.detect_kwargs(), "checkpoint": "s2-rgbn", "progress": False, "workers": 1, "scheduler": None}
    times: dict[str, list[float]] = {m: [] for m in MODES}
    counts: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        before, after = make_scene_pair(Path(tmp), args.size)
        detect_pair(before, after, Path(tmp) / "warm", **base)  # ONNX export and caches, not timed
        for _ in range(args.repeats):
            for mode, over in MODES.items():
                t0 = time.perf_counter()
                res = detect_pair(before, after, Path(tmp) / "out", **{**base, **over})
                times[mode].append(time.perf_counter() - t0)
                counts[mode] = f"{res.n_patches} patches, {res.n_suppressed} suppressed"
    ref = statistics.median(times["before"])
    print(f"scene {args.size} x {args.size} px, s2-rgbn, {args.repeats} interleaved runs, median seconds")
    print("| detect | seconds | vs before | patches |")
    print("|---|---:|---:|---|")
    for mode in MODES:
        med = statistics.median(times[mode])
        print(f"| {mode} | {med:.1f} | {med / ref:.2f} | {counts[mode]} |")


if __name__ == "__main__":
    main()
