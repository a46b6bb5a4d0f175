"""torchvision models for the GPU benchmarks, prepared so that an fp16 engine can be judged on them.

Why the preparation. With ``weights=None`` torchvision initialises every convolution with
``kaiming_normal_(mode="fan_out")``. For a depthwise 3x3 weight of shape (C, 1, 3, 3), fan_out is
9·C instead of 9, so each depthwise layer scales the signal down by about sqrt(C), and the
batch-norm layers, whose running statistics are still (mean 0, var 1), do not undo it. The
logits of a random-init MobileNetV2 are about 1e-10 and those of EfficientNet-B0 about 1e-14:
below fp16's smallest subnormal (6e-8). Every fp16 engine (PyTorch fp16 eager included) then
outputs exact zeros, which reads as "relative L2 error 1.0" against fp32. ResNet-50 has no
depthwise layers and stays O(1).

Some layers are initialised to exact zeros: ViT's classifier head (weight and bias), so every
random-init ViT outputs zeros and its relative L2 error is 0 / 0 = NaN for every engine.
``randomize_zero_weights`` redraws such weights (normal, std 1 / sqrt(fan_in)).

``calibrate_batchnorm`` re-estimates each batch-norm layer's running mean and variance on random
images (cumulative average, batch-norm layers alone in training mode), so every normalized
activation is O(1) in eval mode, as it is in a trained network. The weights stay random.

Needs torch and torchvision; nothing here is imported by the engine.
"""

from __future__ import annotations

import io
from typing import Any

MODELS = {"resnet50": "resnet50", "mobilenet_v2": "mobilenet_v2", "efficientnet_b0": "efficientnet_b0",
          # one network per layer class of the GPU breadth work: grouped convolution (ResNeXt), depthwise
          # 7x7 + LayerNorm + MLP (ConvNeXt), attention (ViT)
          "resnext50_32x4d": "resnext50_32x4d", "convnext_tiny": "convnext_tiny", "vit_b_16": "vit_b_16"}
DEFAULT_MODELS = tuple(MODELS)  # bench/gpu_peers.py runs every row in one process unless --models narrows it
# networks none of the GPU work was tuned on, to check that the standing above is not theirs alone:
# squeeze-excitation with hard-swish, group-width blocks, channel shuffle, dense concatenation,
# fused MBConv, shifted-window attention
OTHER_MODELS = {name: name for name in ("mobilenet_v3_large", "regnet_y_400mf", "shufflenet_v2_x1_0", "densenet121",
                                        "efficientnet_v2_s", "swin_t")}
MODELS.update(OTHER_MODELS)
# networks whose lowering the copy-saving steps change most (bench/gpu_lowering_ab.py): merged 1x1
# convolutions split into branches (GoogLeNet, Inception-v3), post-norm residuals and cosine attention
# with Q/K/V split and transposed (Swin V2)
MODELS.update({name: name for name in ("googlenet", "inception_v3", "swin_v2_t")})
# a wider check of the same kind, measured once the above were ahead: plain deep stacks with large
# fully connected heads (VGG, AlexNet), fire modules (SqueezeNet), basic and wide residual blocks,
# MNASNet, MobileNetV3-S, block + grid attention (MaxViT), RegNetX, a wider EfficientNet, ConvNeXt-S.
# Only their lowering was read before the first measurement (it found MaxViT's scale of K unfused)
UNSEEN_MODELS = {name: name for name in ("vgg16_bn", "alexnet", "squeezenet1_1", "resnet18", "wide_resnet50_2",
                                         "mnasnet1_0", "mobilenet_v3_small", "maxvit_t", "regnet_x_1_6gf",
                                         "efficientnet_b3", "convnext_small")}
MODELS.update(UNSEEN_MODELS)


def calibrate_batchnorm(model: Any, batches: int = 4, batch: int = 16, seed: int = 0, device: str = "cpu") -> Any:
    """Running statistics of every BatchNorm2d from ``batches`` random batches; returns the model in eval mode."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:  # nothing to calibrate (ViT, Swin): the forward passes would change nothing
        return model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.eval()
    for m in bns:  # dropout and stochastic depth stay in eval mode: they would bias the statistics
        m.train()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for _ in range(batches):
            model(torch.rand(batch, 3, 224, 224, generator=gen).to(device))
    return model.eval()


def randomize_zero_weights(model: Any, seed: int = 0) -> list[str]:
    """Redraw every Linear / Conv weight that is exactly zero (normal, std 1 / sqrt(fan_in)); their names."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(seed)
    redrawn = []
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and not m.weight.any():
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / fan_in ** 0.5)
                redrawn.append(name)
    return redrawn


def load(name: str, device: str = "cpu", seed: int = 0) -> Any:
    """torchvision model ``name`` with random weights (seeded, none left at exact zero), batch norm
    calibrated, eval mode, on ``device``."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, MODELS[name])(weights=None).to(device)
    randomize_zero_weights(model, seed)
    return calibrate_batchnorm(model, seed=seed, device=device)


def export_onnx(model: Any, batch: int, sample: tuple[int, ...] = (3, 224, 224)) -> bytes:
    """ONNX (opset 17, TorchScript exporter) of ``model`` for a fixed batch of ``sample``-shaped
    inputs; the model is exported from the CPU."""
    import torch

    device = next(model.parameters()).device
    model = model.cpu()
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.randn(batch, *sample),), buf, input_names=["input"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    model.to(device)
    return buf.getvalue()
