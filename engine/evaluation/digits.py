"""A small CNN trained on real images (scikit-learn's handwritten digits), for INT8 accuracy.

``load_splits`` cuts the 1797 8x8 digit images (UCI optdigits, shipped with scikit-learn) into
train / calibration / test with a fixed seed; calibration images come from the training side,
the test split is never seen before evaluation. ``train`` fits
conv3x3(8)-ReLU-maxpool2-conv3x3(16)-ReLU-maxpool2-FC(10) with JAX (Adam, full batch, seeded:
a few seconds on a CPU). ``to_onnx`` exports it with onnx.helper (IR 8, opset 17).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray  # (N, 1, 8, 8) float32 in [0, 1]
    y_train: np.ndarray
    x_calib: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_splits(seed: int = 0, n_test: int = 597, n_calib: int = 200) -> Splits:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:n_test], order[n_test:]
    return Splits(x[train], y[train], x[train[:n_calib]], x[test], y[test])


def _init(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {"w1": he((8, 1, 3, 3), 9), "b1": np.zeros(8, np.float32),
            "w2": he((16, 8, 3, 3), 72), "b2": np.zeros(16, np.float32),
            "w3": he((64, 10), 64), "b3": np.zeros(10, np.float32)}


def _forward(p, x):
    import jax
    import jax.numpy as jnp

    dn = ("NCHW", "OIHW", "NCHW")

    def conv(v, w, b):
        y = jax.lax.conv_general_dilated(v, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
        return y + b[None, :, None, None]

    def pool(v):
        return jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    h = pool(jax.nn.relu(conv(x, p["w1"], p["b1"])))
    h = pool(jax.nn.relu(conv(h, p["w2"], p["b2"])))
    return h.reshape(h.shape[0], -1) @ p["w3"] + p["b3"]


def train(splits: Splits, seed: int = 0, steps: int = 200, lr: float = 0.02) -> dict[str, np.ndarray]:
    """Full-batch Adam on the training split; returns float32 numpy weights."""
    import jax
    import jax.numpy as jnp

    params = {k: jnp.asarray(v) for k, v in _init(seed).items()}
    x, y = jnp.asarray(splits.x_train), jnp.asarray(splits.y_train)

    def loss(p):
        logits = _forward(p, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    b1, b2, eps = 0.9, 0.999, 1e-8

    @jax.jit
    def step(p, m, v, t):
        g = jax.grad(loss)(p)
        m = jax.tree_util.tree_map(lambda a, b: b1 * a + (1 - b1) * b, m, g)
        v = jax.tree_util.tree_map(lambda a, b: b2 * a + (1 - b2) * b * b, v, g)
        mh = jax.tree_util.tree_map(lambda a: a / (1 - b1 ** t), m)
        vh = jax.tree_util.tree_map(lambda a: a / (1 - b2 ** t), v)
        p = jax.tree_util.tree_map(lambda a, c, d: a - lr * c / (jnp.sqrt(d) + eps), p, mh, vh)
        return p, m, v

    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    for t in range(1, steps + 1):
        params, m, v = step(params, m, v, t)
    return {k: np.asarray(val, dtype=np.float32) for k, val in params.items()}


def predict(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """FP32 logits of the trained model (the training framework's own forward pass)."""
    return np.asarray(_forward(params, x))


def to_onnx(params: dict[str, np.ndarray], batch: int | None = None) -> onnx.ModelProto:
    """ONNX export (IR 8, opset 17); ``batch`` None leaves the batch dimension symbolic."""
    inits = [numpy_helper.from_array(params["w1"], "w1"), numpy_helper.from_array(params["b1"], "b1"),
             numpy_helper.from_array(params["w2"], "w2"), numpy_helper.from_array(params["b2"], "b2"),
             numpy_helper.from_array(params["w3"], "w3"), numpy_helper.from_array(params["b3"], "b3"),
             numpy_helper.from_array(np.array([-1, 64], np.int64), "flat_shape")]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p2", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], name="fc"),
    ]
    n = batch if batch is not None else "N"
    graph = helper.make_graph(nodes, "digits_cnn",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [n, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hetrt-digits")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def batched(x: np.ndarray, batch: int) -> list[np.ndarray]:
    """Cut ``x`` into full batches, padding the last with zeros (callers drop the padded rows)."""
    out = []
    for i in range(0, len(x), batch):
        b = x[i:i + batch]
        if len(b) < batch:
            b = np.concatenate([b, np.zeros((batch - len(b), *b.shape[1:]), b.dtype)])
        out.append(np.ascontiguousarray(b))
    return out
