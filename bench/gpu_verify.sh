#!/usr/bin/env bash
# One pass over everything the GPU work needs checked on a GPU, results under OUTDIR:
#   bench/gpu_verify.sh OUTDIR [--quick]
# 1. the GPU tests (pytest -m gpu, JUnit XML), 2. per-layer-class times against PyTorch
# (bench/gpu_layer_profile.py), 3. the peers benchmark on the networks of each layer class
# (bench/gpu_peers.py; --quick: batches 1 and 32, no torch.compile).
set -uo pipefail
out=${1:?usage: bench/gpu_verify.sh OUTDIR [--quick]}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
# -v names every test as it finishes, so a run cut short by the time limit still shows its failures
timeout 420 python3 -m pytest -v -m gpu -p no:cacheprovider --continue-on-collection-errors \
    --junitxml="$out/gpu_tests.xml" tests > "$out/gpu_tests.txt" 2>&1
grep -E "FAILED|ERROR" "$out/gpu_tests.txt" | head -40
tail -3 "$out/gpu_tests.txt"
timeout 300 python3 bench/gpu_layer_profile.py --batch 32 --runs 5 --out "$out/gpu_layer_profile.json" \
    > "$out/gpu_layer_profile.txt" 2>&1
if [ "${2:-}" = "--quick" ]; then
    peers=(--batches 1 32 --no-int8)
else
    peers=(--batches 1 32 256 --compile)
fi
timeout 900 python3 bench/gpu_peers.py --models resnext50_32x4d convnext_tiny vit_b_16 "${peers[@]}" \
    --out "$out/gpu_peers_breadth.json" > "$out/gpu_peers_breadth.txt" 2>&1
tail -25 "$out/gpu_peers_breadth.txt"
