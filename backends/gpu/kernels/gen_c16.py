"""Generated NHWC16 int8 kernels with 16 channels a thread: ``gen.map_kernel``'s RAW int8 -> int8
form where the int8 tensors are read and written as 16-byte vectors (the INT8 squeeze-excitation
bridge, ``Int8Lowering.lower_int8_bridge``)."""

from __future__ import annotations

from collections.abc import Sequence

from backends.gpu.kernels.gen import CTYPE, Operand, _decompose, can_load_float, index_type, load, offset


def is_c16_vector(op: Operand, channels_padded: int) -> bool:
    """Whether an int8 NCHW-logical operand stores each pixel's ``channels_padded`` channels as
    contiguous, 16-byte aligned bytes (NHWC16), so that 16 of them are one vector load or store."""
    return (op.dtype == "int8" and len(op.strides) == 4 and op.strides[1] == 1 and op.base % 16 == 0
            and channels_padded % 16 == 0
            and all(st % 16 == 0 and st >= channels_padded for st in (op.strides[0], op.strides[2], op.strides[3])))


def map_kernel_c16(name: str, out_shape: Sequence[int], channels_padded: int, out: Operand,
                   ins: Sequence[Operand], body: str, span: int = 0) -> str:
    """``map_kernel``'s RAW int8 -> int8 form on NHWC16 tensors, one thread per 16 channels of a pixel.

    The output and every int8 operand that ``is_c16_vector`` are read and written as one 16-byte
    vector per thread (byte-per-thread kernels issue sixteen times the memory instructions); other
    operands (a broadcast gate, say) are read per element. ``body`` is ``map_kernel``'s: it sets
    ``yr`` from ``X0..`` at channel ``l1``; channels past the true count are written 0.
    """
    assert len(out_shape) == 4 and "RAW" in body and is_c16_vector(out, channels_padded)
    n, c, h, w = out_shape
    vec = [o.dtype == "int8" and is_c16_vector(o, channels_padded) for o in ins]
    total = n * h * w * (channels_padded // 16)
    coords = ["l0", "c0", "l2", "l3"]
    params = ["signed char* __restrict__ Y"] + [f"const {CTYPE[o.dtype]}* __restrict__ x{i}" for i, o in enumerate(ins)]
    lines = [f'extern "C" __global__ void __launch_bounds__(256) {name}({", ".join(params)}) {{',
             f"  typedef {index_type(total, span)} IT;",
             "  IT t = (IT)blockIdx.x * 256 + threadIdx.x;",
             f"  if (t >= (IT){total}) return;",
             _decompose([n, h, w, channels_padded // 16], ["l0", "l2", "l3", "cv"]),
             "  const IT c0 = cv * 16;"]
    defs, undefs = [], []
    for i, o in enumerate(ins):
        if vec[i]:
            lines.append(f"  const uint4 v{i} = *reinterpret_cast<const uint4*>(x{i} + {offset(o, coords)});")
            defs.append(f"#define X{i} (reinterpret_cast<const signed char*>(&v{i})[j])")
        else:
            ld = f"x{i}[{offset(o, ['l0', 'l1', 'l2', 'l3'])}]"
            defs.append(f"#define X{i} ({load(o.dtype, ld) if can_load_float(o.dtype) and 'FLT' in body else ld})")
        undefs.append(f"#undef X{i}")
    lines += ["  uint4 vy;", "  signed char* yb = reinterpret_cast<signed char*>(&vy);", "#pragma unroll",
              "  for (int j = 0; j < 16; ++j) {", "    const IT l1 = c0 + j;", "    signed char yr = 0;",
              f"    if (l1 < (IT){c}) {{ " + body.replace("RAW", "").replace("FLT", "") + " }",
              "    yb[j] = yr;", "  }",
              f"  *reinterpret_cast<uint4*>(Y + {offset(out, coords)}) = vy;", "}"]
    return "\n".join([*defs, *lines, *undefs, ""])


def map_grid_c16(out_shape: Sequence[int], channels_padded: int) -> tuple[int]:
    """The grid of ``map_kernel_c16``: 256 threads per block, a thread per 16 channels of a pixel."""
    n, _, h, w = out_shape
    return (max(1, -(-(n * h * w * (channels_padded // 16)) // 256)),)
