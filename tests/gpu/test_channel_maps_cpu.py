"""Channel maps through movement layers (``lowering/channel_maps.py``): the shape-only proof that a
chain of reshapes and transposes moves channels only, against numpy moving an index array, on
channel shuffles, their look-alikes that are not channel-only, and random chains."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from backends.gpu.lowering.channel_maps import shuffle_channel_map
from engine.ir.layers.tensor import ShuffleParams
from engine.ir.network import Layer


def _layer(first=None, reshape=None, second=None) -> Layer:
    return Layer("s", ShuffleParams(first, reshape, second), ["x"], ["y"])


def _numpy_map(shape, layers) -> list[int] | None:
    """The channel map numpy gives, or None where some (n, h, w) moves or the map varies."""
    n, c, h, w = shape
    idx = np.arange(n * c * h * w).reshape(shape)
    y = idx
    for la in layers:
        p = la.params
        y = y.transpose(p.first_perm) if p.first_perm else y
        y = y.reshape(p.reshape) if p.reshape else y
        y = y.transpose(p.second_perm) if p.second_perm else y
    if y.ndim != 4:
        return None
    src = np.stack(np.unravel_index(y, shape))  # (4, N', C', H', W') source coordinates
    if y.shape[0] != n or y.shape[2:] != (h, w):
        return None
    grid = np.indices(y.shape)
    if not all(np.array_equal(src[a], grid[a]) for a in (0, 2, 3)):
        return None
    chan = src[1]
    if not (chan == chan[:1, :, :1, :1]).all():
        return None
    return [int(v) for v in chan[0, :, 0, 0]]


@pytest.mark.parametrize("n,g,c,h,w", [(2, 2, 24, 3, 5), (1, 4, 32, 1, 1), (3, 3, 9, 2, 2), (2, 2, 2, 4, 4)])
def test_the_channel_shuffle(n, g, c, h, w):
    chain = [_layer(reshape=(n, g, c // g, h, w), second=(0, 2, 1, 3, 4)), _layer(reshape=(n, c, h, w))]
    got = shuffle_channel_map((n, c, h, w), chain, (n, c, h, w))
    assert got == _numpy_map((n, c, h, w), chain)
    assert got == [(k % g) * (c // g) + k // g for k in range(c)]


@pytest.mark.parametrize("chain", [
    [_layer(reshape=(2, 3, 6, 5))],  # moves channel digits into H
    [_layer(reshape=(2, 2, 3, 3, 5), second=(0, 1, 3, 2, 4)), _layer(reshape=(2, 6, 3, 5))],  # channels with H
    [_layer(second=(0, 1, 3, 2))],  # an H/W transpose (here square-free: 3 x 5 -> 5 x 3)
    [_layer(reshape=(2, 6, 15)), _layer(reshape=(2, 6, 5, 3))],  # H and W re-split
])
def test_chains_that_move_more_than_channels_are_refused(chain):
    out = tuple(_numpy_out_shape((2, 6, 3, 5), chain))
    assert _numpy_map((2, 6, 3, 5), chain) is None
    assert shuffle_channel_map((2, 6, 3, 5), chain, out) is None


def _numpy_out_shape(shape, layers):
    y = np.empty(shape)
    for la in layers:
        p = la.params
        y = y.transpose(p.first_perm) if p.first_perm else y
        y = y.reshape(p.reshape) if p.reshape else y
        y = y.transpose(p.second_perm) if p.second_perm else y
    return y.shape


def _factorizations(c: int) -> list[tuple[int, ...]]:
    out = [(c,)]
    for a in range(2, c):
        if c % a == 0:
            out += [(a, *rest) for rest in _factorizations(c // a)]
    return out


@pytest.mark.parametrize("seed", range(80))
def test_random_chains_agree_with_numpy(seed):
    rng = np.random.default_rng(seed)
    n, c, h, w = int(rng.choice([1, 2, 3])), int(rng.choice([4, 6, 8, 12])), 2, int(rng.choice([1, 3]))
    shape = (n, c, h, w)
    facs = _factorizations(c)
    split = facs[int(rng.integers(len(facs)))]
    dims = (n, *split, h, w)
    if rng.random() < 0.7:  # permute the channel digits only
        perm = (0, *(int(a) for a in rng.permutation(range(1, 1 + len(split)))), len(dims) - 2, len(dims) - 1)
    else:  # any axes
        perm = tuple(int(a) for a in rng.permutation(len(dims)))
    chain = [_layer(reshape=dims, second=perm), _layer(reshape=shape)]
    assert shuffle_channel_map(shape, chain, shape) == _numpy_map(shape, chain), (shape, dims, perm)


def test_every_permutation_of_three_channel_digits():
    shape = (2, 24, 2, 3)
    for perm in itertools.permutations((1, 2, 3)):
        chain = [_layer(reshape=(2, 2, 3, 4, 2, 3), second=(0, *perm, 4, 5)), _layer(reshape=shape)]
        assert shuffle_channel_map(shape, chain, shape) == _numpy_map(shape, chain)
