"""Small PyTorch transformers in the styles of ViT-B/16 and Swin-T (same op patterns, tiny dims).

They are written here so the tests need no torchvision and no downloaded weights: a ViT with a
patch-embedding convolution, class token, position embedding, pre-norm encoder blocks through
``nn.MultiheadAttention`` and a tanh-GELU MLP; a Swin with shifted-window attention (padding to a
multiple of the window computed with ``%``, ``torch.roll``, window partition by view/permute, a
relative position bias gathered from a table, an attention mask written by slice assignment),
patch merging and an erf-GELU MLP. Only imported when torch is installed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MiniViT(nn.Module):
    def __init__(self, image: int = 32, patch: int = 8, hidden: int = 64, heads: int = 4, layers: int = 2,
                 mlp: int = 128, classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, hidden, patch, patch)
        tokens = (image // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, hidden) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, hidden) * 0.5)
        self.blocks = nn.ModuleList(_ViTBlock(hidden, heads, mlp) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        n, c = x.shape[0], x.shape[1]
        x = x.reshape(n, c, -1).permute(0, 2, 1)
        x = torch.cat([self.cls.expand(n, -1, -1), x], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


class _ViTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp), nn.GELU(approximate="tanh"), nn.Linear(mlp, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class _WindowAttention(nn.Module):
    """Multi-head self-attention inside (shifted) windows of a (B, H, W, C) feature map."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, cosine: bool = False) -> None:
        super().__init__()
        self.heads, self.window, self.shift = heads, window, shift
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.5)
        # Swin V2: cosine attention with a learned per-head logit scale, bias as 16 · sigmoid(·)
        self.logit_scale = nn.Parameter(torch.log(1 + 9 * torch.rand(heads, 1, 1))) if cosine else None
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("bias_index", (rel[..., 0] * (2 * window - 1) + rel[..., 1]).flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        win = self.window
        pad_h, pad_w = (win - h % win) % win, (win - w % win) % win
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = x.shape[1], x.shape[2]
        shift = 0 if win >= hp else self.shift
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        nh, nw = hp // win, wp // win
        t = x.view(b, nh, win, nw, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, win * win, c)
        qkv = self.qkv(t).reshape(t.shape[0], win * win, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.bias_table[self.bias_index].view(win * win, win * win, self.heads).permute(2, 0, 1)
        if self.logit_scale is None:
            q, k, v = qkv[0] * (c // self.heads) ** -0.5, qkv[1], qkv[2]
            attn = q @ k.transpose(-2, -1)
        else:
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            attn = attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
            bias = 16 * torch.sigmoid(bias)
        attn = attn + bias.unsqueeze(0)
        if shift:
            attn = attn.view(b, nh * nw, self.heads, win * win, win * win) + self._mask(x, hp, wp, shift)
            attn = attn.view(-1, self.heads, win * win, win * win)
        t = (attn.softmax(-1) @ v).transpose(1, 2).reshape(t.shape[0], win * win, c)
        t = self.proj(t)
        x = t.view(b, nh, nw, win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x[:, :h, :w, :].contiguous()

    def _mask(self, x: torch.Tensor, hp: int, wp: int, shift: int) -> torch.Tensor:
        """Region ids written by slice assignment; pairs from different regions get -100."""
        win = self.window
        region = x.new_zeros((hp, wp))
        cuts = ((0, -win), (-win, -shift), (-shift, None))
        label = 0
        for r0, r1 in cuts:
            for c0, c1 in cuts:
                region[r0:r1, c0:c1] = label
                label += 1
        region = region.view(hp // win, win, wp // win, win).permute(0, 2, 1, 3).reshape(-1, win * win)
        diff = region.unsqueeze(1) - region.unsqueeze(2)
        mask = diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)
        return mask.unsqueeze(1).unsqueeze(0)


class _SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int, cosine: bool = False) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = _WindowAttention(dim, heads, window, shift, cosine)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class _PatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduce = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1], x.shape[2]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduce(self.norm(x))


class MiniSwin(nn.Module):
    """Patch 4, window 4: stage 1 (regular + shifted window) at 8×8, merge, stage 2 at 4×4;
    ``cosine``: Swin V2's scaled cosine attention."""

    def __init__(self, dim: int = 32, heads: int = 2, window: int = 4, classes: int = 10, cosine: bool = False) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, 4)
        self.embed_norm = nn.LayerNorm(dim)
        self.stage1 = nn.Sequential(_SwinBlock(dim, heads, window, 0, cosine),
                                    _SwinBlock(dim, heads, window, window // 2, cosine))
        self.merge = _PatchMerging(dim)
        self.stage2 = nn.Sequential(_SwinBlock(2 * dim, 2 * heads, window, window // 2, cosine))
        self.norm = nn.LayerNorm(2 * dim)
        self.head = nn.Linear(2 * dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        x = self.stage2(self.merge(self.stage1(x)))
        return self.head(self.norm(x).mean(dim=(1, 2)))


def transformer_encoder(hidden: int = 64, heads: int = 4, layers: int = 2) -> nn.Module:
    layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout=0.0, activation="gelu", batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class CausalEncoder(nn.Module):
    """The encoder with a causal mask made from the sequence length (torch.triu → Trilu, folded)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = transformer_encoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        mask = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        return self.encoder(x, mask=mask)


class EinsumAttention(nn.Module):
    """Self-attention written with torch.einsum, as MaxViT's blocks are (exported as ONNX Einsum)."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.randn(heads, 1) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).unbind(2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * (c // self.heads) ** -0.5
        scores = scores + torch.einsum("bhqk,hz->bhqk", scores, self.bias)
        out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
        return self.proj(out.reshape(b, t, c))
