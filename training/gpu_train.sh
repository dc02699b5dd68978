#!/usr/bin/env bash
# Train several configs at once on one CUDA GPU, within a wall-clock budget, from packs (no GDAL needed).
#
#   training/gpu_train.sh OUT MINUTES CONFIG:PACK [CONFIG:PACK ...]
#
# Make the packs where the data lives:  cspon-rs pack-data -c configs/train_rgb.yaml --out packs/rgb.npz
# Then, on the GPU machine (repo root as working directory, torch with CUDA installed):
#   training/gpu_train.sh runs/gpu 4 configs/train_rgb.yaml:packs/rgb.npz configs/train_s2_rgbn.yaml:packs/s2_rgbn.npz
# Each config runs in its own process (AMP + channels-last on CUDA, see training/loop.py) with
# nproc/N - 1 batch-drawing workers, and stops after the epoch that passes MINUTES. Per config it writes
# OUT/<config>/best.safetensors + best.json (threshold picked on the validation split), history.json,
# curves.png, and OUT/<config>.log; OUT/gpu_util.csv samples GPU utilisation every 5 s.
# Score the checkpoints on the test split afterwards, where the data lives (cspon-rs evaluate).
# Environment: PYTHON (default python3), DEVICE (default cuda), EXTRA_ARGS (more `cspon-rs train` options).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 OUT MINUTES CONFIG:PACK [CONFIG:PACK ...]" >&2
    exit 2
fi
out=$1
minutes=$2
shift 2
mkdir -p "$out"
workers=$(( $(nproc) / $# - 1 ))
if [ "$workers" -lt 1 ]; then workers=1; fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,name,utilization.gpu,memory.used --format=csv -l 5 > "$out/gpu_util.csv" &
    smi=$!
fi
pids=()
for spec in "$@"; do
    cfg=${spec%%:*}
    pack=${spec#*:}
    name=$(basename "$cfg" .yaml)
    # shellcheck disable=SC2086
    PYTHONUNBUFFERED=1 "${PYTHON:-python3}" -m cspon_rs.cli train --config "$cfg" --pack "$pack" --out "$out/$name" \
        --device "${DEVICE:-cuda}" --max-minutes "$minutes" --workers "$workers" ${EXTRA_ARGS:-} > "$out/$name.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [ -n "${smi:-}" ]; then kill "$smi" || true; fi
for spec in "$@"; do
    name=$(basename "${spec%%:*}" .yaml)
    echo "== $name"; tr '\r' '\n' < "$out/$name.log" | grep -v "it/s\|s/it" | tail -n 8
done
exit $status
