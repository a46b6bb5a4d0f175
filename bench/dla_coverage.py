"""DLA-capable share of real CNN architectures: layers the DLA can run / all layers, as ``hetrt place
MODEL --int8 --platform orin-agx-64gb`` decides it (the optimized network, INT8 planned, Orin DLA).

Run:  python bench/dla_coverage.py [--platform xavier-agx]   (output: bench/results/dla_coverage.txt)
Models: the bundled zoo (resnet18/50, mobilenet_v2) and bench/cnn_archs.py (built in memory, never
saved). Prints per model the share and each refusal reason with its count.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import onnx  # noqa: E402

from backends.dla import supports  # noqa: E402
from engine.ir.dtypes import Precision  # noqa: E402
from engine.model_loading import load_network  # noqa: E402
from scheduler.platforms import get_platform  # noqa: E402

BUNDLED = ("resnet18", "resnet50", "mobilenet_v2")


def coverage(spec: str, cfg) -> tuple[int, int, Counter]:
    net = load_network(spec)
    reasons: Counter = Counter()
    ok = 0
    for layer in net.layers:
        s = supports(layer, net, Precision.INT8, cfg)
        ok += s.ok
        if not s.ok:
            reasons[s.reason[:110]] += 1
    return ok, len(net.layers), reasons


def main() -> int:
    import cnn_archs

    plat = sys.argv[sys.argv.index("--platform") + 1] if "--platform" in sys.argv else "orin-agx-64gb"
    from dla_sim.config import get_config

    cfg = get_config(get_platform(plat).dla_config)
    shares = []
    with tempfile.TemporaryDirectory() as tmp:
        specs = list(BUNDLED)
        for name, build in cnn_archs.ARCHS.items():
            path = Path(tmp) / f"{name}.onnx"
            onnx.save(build(), path)
            specs.append(str(path))
        print(f"DLA-capable share of layers, INT8, {plat} ({cfg.name} DLA)")
        print(f"{'model':24s} {'DLA':>5s} {'all':>5s} {'share':>7s}")
        details = []
        for spec in specs:
            ok, total, reasons = coverage(spec, cfg)
            name = Path(spec).stem
            shares.append(ok / total)
            print(f"{name:24s} {ok:5d} {total:5d} {100 * ok / total:6.1f}%")
            details += [f"  {name}: {n} x {r}" for r, n in reasons.most_common()]
        print(f"{'average':24s} {'':5s} {'':5s} {100 * sum(shares) / len(shares):6.1f}%")
        if details:
            print("\nrefusals (reason, truncated):")
            print("\n".join(details))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
