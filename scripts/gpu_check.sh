#!/usr/bin/env bash
# The device check, in one go and under 10 minutes on one current GPU (a 15-minute budget
# leaves room for a rerun): a few full-size studies written on the device, the paper's image
# stage trained on them for a few hundred bf16 steps, then benchmarks/penet_gpu.py.
#   Usage: scripts/gpu_check.sh [OUT_DIR]      (figures in OUT_DIR/gpu_check.log)
set -euo pipefail
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
log="$out/gpu_check.log"
python -m pip install --quiet "torch==2.13.0" -e . 2>&1 | tail -n 2 || true
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$log"
# 12 studies at 512 x 512 with Table 1's slice counts: about 2.4 GB of int16.
start=$SECONDS
radfusion synth "$out/data" --studies 12 --size 512 --workers 8 > /dev/null
echo "synth: 12 studies at 512 x 512 in $((SECONDS - start)) s" | tee -a "$log"
# 300 steps of batch 8 (2400 windows) in bf16-mixed, the paper's recipe otherwise.
radfusion benchmark \
    --data "$out/data" --out "$out/run" \
    --set image.accelerator=gpu --set image.devices=1 --set image.precision=bf16-mixed \
    --set image.max_epochs=1 --set image.windows_per_epoch=2400 \
    --set ehr.grid='{C: [1.0], l1_ratio: [0.5], class_weight: [null]}' \
    --set evaluation.n_boot=200 2>&1 | tail -n 25 | tee -a "$log"
grep -h '"seconds"' "$out"/run/stages/*.json | tee -a "$log" || true
python benchmarks/penet_gpu.py --batch 8 --steps 40 2>&1 | tee -a "$log"
python benchmarks/penet_gpu.py --batch 16 --steps 30 2>&1 | tee -a "$log"
