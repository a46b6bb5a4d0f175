#!/usr/bin/env bash
# What the GPU work needs checked on a GPU, in steps that each fit a 10-minute slot; results under OUTDIR:
#   bench/gpu_verify.sh OUTDIR [STEP ...]      (default: all steps, in this order)
# warm     compile every kernel module once (NVRTC: minutes on a fresh machine; CuPy then keeps the
#          cubins on disk), so that no timed step below pays for it
# tests    the GPU tests (pytest -m gpu, verbose, JUnit XML)
# peers    ResNet-50, MobileNetV2, EfficientNet-B0 at batch 1 and 256: hetrt FP16 and INT8 against
#          PyTorch eager / CUDA graph / torch.compile and JAX (bench/gpu_peers.py)
# profile  per-layer-class times against PyTorch at batch 32 (bench/gpu_layer_profile.py)
# breadth  the peers benchmark on ResNeXt-50, ConvNeXt-T and ViT-B/16 at batch 1, 32 and 256
# others   the peers benchmark (FP16) at batch 32 on networks the GPU work was not tuned on
#          (gpu_torchvision.OTHER_MODELS: MobileNetV3-L, RegNetY-400MF, ShuffleNetV2, DenseNet-121,
#          EfficientNetV2-S, Swin-T)
# unseen   the same at batch 32 on a wider set the GPU work was not tuned on (gpu_torchvision.UNSEEN_MODELS)
# kernels  ResNet-50's convolution classes at batch 256: each kernel family's best tile and cuDNN
# behind   per-layer-class times against PyTorch at batch 32 on the networks behind torch.compile
#          there (GoogLeNet, Inception-v3, DenseNet-121, Swin-V2-T; bench/gpu_layer_profile.py)
# trace    every kernel of those networks' CUDA-graph replay at batch 32 with its device time
#          (bench/gpu_kernel_trace.py: the per-launch profile above also times the host's launches)
# int8     ResNet-50's INT8 layer shapes (bench/gpu_int8_tiles.py), the epilogue probe
#          (bench/gpu_int8_epilogue.py), then the FP16, INT8 (precision by timing) and INT8-only engines at
#          batch 1 and 256 (bench/gpu_int8.py --int8-only)
# int8nets the FP16, INT8 (precision by timing) and INT8-only engines of $MODELS (default MobileNetV2 and
#          EfficientNet-B0; one model a call at batch 256 fits the 10-minute slot) at batch 1 and 256
set -uo pipefail
out=${1:?usage: bench/gpu_verify.sh OUTDIR [warm|tests|peers|profile|breadth|others|unseen|behind|trace|kernels|int8|int8nets ...]}
shift
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(warm tests peers profile breadth kernels)
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
for step in "${steps[@]}"; do
    case $step in
    warm)
        timeout 540 python3 -c "import time; t = time.time()
from backends.gpu.kernels import conv, direct, int8
conv.compile_all(); int8.compile_all(); direct.compile_all()
print(f'kernel modules compiled in {time.time() - t:.0f} s')" 2>&1 | tail -3 | tee "$out/warm.txt" ;;
    tests)  # -v names every test as it finishes, so a run cut short still shows its failures
        timeout 540 python3 -m pytest -v -m gpu -p no:cacheprovider --continue-on-collection-errors \
            --junitxml="$out/gpu_tests.xml" tests > "$out/gpu_tests.txt" 2>&1
        grep -E "FAILED|ERROR" "$out/gpu_tests.txt" | head -40
        tail -3 "$out/gpu_tests.txt" ;;
    peers)
        timeout 560 python3 bench/gpu_peers.py --models resnet50 mobilenet_v2 efficientnet_b0 --batches 1 256 \
            --compile --jax --out "$out/gpu_peers.json" > "$out/gpu_peers.txt" 2>&1
        tail -12 "$out/gpu_peers.txt" ;;
    profile)
        timeout 540 python3 bench/gpu_layer_profile.py --batch 32 --runs 5 --out "$out/gpu_layer_profile.json" \
            > "$out/gpu_layer_profile.txt" 2>&1
        tail -30 "$out/gpu_layer_profile.txt" ;;
    breadth)
        timeout 560 python3 bench/gpu_peers.py --models resnext50_32x4d convnext_tiny vit_b_16 \
            --batches 1 32 256 --compile --out "$out/gpu_peers_breadth.json" > "$out/gpu_peers_breadth.txt" 2>&1
        tail -14 "$out/gpu_peers_breadth.txt" ;;
    others|unseen)  # gpu_torchvision.OTHER_MODELS or UNSEEN_MODELS
        set_name=$([ "$step" = others ] && echo OTHER_MODELS || echo UNSEEN_MODELS)
        timeout 590 python3 bench/gpu_peers.py --models $(python3 -c "import sys; sys.path.insert(0, 'bench')
import gpu_torchvision; print(*getattr(gpu_torchvision, '$set_name'))") --batches 32 --compile --no-int8 \
            --out "$out/gpu_peers_$step.json" > "$out/gpu_peers_$step.txt" 2>&1
        tail -14 "$out/gpu_peers_$step.txt" ;;
    behind)
        timeout 560 python3 bench/gpu_layer_profile.py --models googlenet inception_v3 densenet121 swin_v2_t \
            --batch 32 --runs 5 --out "$out/gpu_layer_profile_behind.json" > "$out/gpu_layer_profile_behind.txt" 2>&1
        tail -30 "$out/gpu_layer_profile_behind.txt" ;;
    trace)
        timeout 300 python3 bench/gpu_kernel_trace.py --models googlenet inception_v3 densenet121 swin_v2_t \
            --batch 32 --out "$out/gpu_kernel_trace.json" > "$out/gpu_kernel_trace.txt" 2>&1
        grep -E "^==|^   [a-z]" "$out/gpu_kernel_trace.txt" | head -60 ;;
    kernels)
        timeout 300 python3 bench/gpu_kernels.py --batches 256 --rn50-batches "" \
            --out "$out/gpu_kernels.json" > "$out/gpu_kernels.txt" 2>&1
        tail -12 "$out/gpu_kernels.txt" ;;
    int8)
        timeout 60 python3 bench/gpu_int8_tiles.py --out "$out/gpu_int8_tiles.json" | tail -7
        timeout 200 python3 bench/gpu_int8_epilogue.py --out "$out/gpu_int8_epilogue.json" > "$out/gpu_int8_epilogue.txt" 2>&1
        tail -12 "$out/gpu_int8_epilogue.txt"
        timeout 320 python3 bench/gpu_int8.py --batches 1 256 --int8-only --out "$out/gpu_int8.json" > "$out/gpu_int8.txt" 2>&1
        tail -12 "$out/gpu_int8.txt" ;;
    int8nets)
        for m in ${MODELS:-mobilenet_v2 efficientnet_b0}; do
            timeout 560 python3 bench/gpu_int8.py --models "$m" --batches 1 256 --int8-only \
                --out "$out/gpu_int8_$m.json" > "$out/gpu_int8_$m.txt" 2>&1
            grep "^|" "$out/gpu_int8_$m.txt"
        done ;;
    *) echo "unknown step $step (warm, tests, peers, profile, breadth, others, unseen, behind, trace, kernels, int8, int8nets)" >&2
       exit 2 ;;
    esac
done
