"""``hetrt eval``: the accuracy of plans over a dataset (top-k, agreement with a reference, worst samples)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.ir.errors import HetrtError

NAME = "eval"

EVAL_EPILOG = """\
TARGET is a plan file (any placement: GPU, DLA, mixed, INT8) or an .onnx model (built FP32 with
--batch). Several targets are evaluated on the same samples and reported side by side.
DATA is a folder of .npy batches, or of images (PNG/JPEG through Pillow) either in class
sub-folders (ImageNet style, labels from the sorted folder names) or flat with --labels.
Results are identical (bit for bit) for any --workers and for --cluster.

example (the bundled digits data):
  hetrt dataset digits -o digits/
  hetrt build digits/digits.onnx --batch 64 --int8 --calib digits/calib -o digits/int8.plan
  hetrt eval digits/int8.plan --data digits/test --labels digits/test_labels.npy \\
             --reference digits/digits.onnx --workers 2
"""


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _hxw(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        vals = [int(v) for v in parts]
    except ValueError:
        vals = []
    if len(vals) == 1:
        return vals[0], vals[0]
    if len(vals) != 2:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")
    return vals[0], vals[1]


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="accuracy of plans over a dataset (top-k, agreement with a reference)",
                       description="Run plans over every sample of a dataset and report top-k accuracy, "
                                   "agreement with an FP32 reference model, a confusion matrix and the worst "
                                   "samples; in this process, local worker processes or on a Ray cluster.",
                       epilog=EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="+", metavar="TARGET", help="plan files or .onnx models")
    p.add_argument("--data", required=True, help="dataset folder (.npy batches or images)")
    p.add_argument("--labels", help=".npy of ints, or text: one int per line, or 'NAME LABEL' per line")
    p.add_argument("--reference", metavar="MODEL.onnx", help="FP32 model to measure agreement against")
    p.add_argument("--top-k", type=int, nargs="+", default=[1, 5], metavar="K",
                   help="accuracies to report (default 1 5)")
    p.add_argument("--output", help="output tensor holding the logits (default: the first output)")
    p.add_argument("--batch", type=int, default=32, help="batch of plans built from .onnx targets (default 32)")
    p.add_argument("--workers", type=int, default=1, help="worker processes, or Ray actors with --cluster")
    p.add_argument("--cluster", metavar="ADDRESS", help="'local-ray' (start Ray here) or ray://HOST:PORT")
    p.add_argument("--shard-batches", type=int, default=4, help="batches per shard of work (default 4)")
    p.add_argument("--confusion", action="store_true", help="include the confusion matrix")
    p.add_argument("--worst", type=int, default=5, help="list the N samples the plan gets most wrong")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot accuracy per target (needs matplotlib)")
    g = p.add_argument_group("image preprocessing")
    g.add_argument("--resize", type=int, help="resize the short side to N pixels")
    g.add_argument("--crop", type=_hxw, help="center crop N or HxW")
    g.add_argument("--scale", type=float, default=1 / 255, help="multiply pixels by this first (default 1/255)")
    g.add_argument("--mean", type=_floats, default=(0.0,), help="subtract, per channel (e.g. 0.485,0.456,0.406)")
    g.add_argument("--std", type=_floats, default=(1.0,), help="divide, per channel (e.g. 0.229,0.224,0.225)")
    g.add_argument("--layout", choices=("NCHW", "NHWC"), default="NCHW", help="input layout (default NCHW)")
    g.add_argument("--channels", type=int, choices=(1, 3), default=3, help="1: grayscale, 3: RGB (default)")
    return p


def _progress(name: str):
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=f"eval {name}", unit="shard", file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update


def _load_target(target: str, batch: int) -> bytes:
    from engine.plan import MAGIC

    try:
        data = Path(target).read_bytes()
    except OSError as e:
        raise HetrtError(f"cannot read {target}: {e.strerror or e}") from None
    if data.startswith(MAGIC):
        return data
    from engine.builder import BuilderConfig, build_from_onnx
    from engine.ir.logger import Logger, Severity

    if batch < 1:
        raise HetrtError(f"--batch must be >= 1, got {batch}")
    return build_from_onnx(target, BuilderConfig(batch=batch), Logger(Severity.ERROR))


def format_results(results) -> str:
    ks = sorted({k for r in results for k in r.topk})
    head = f"{'target':<36}" + "".join(f"{'top-' + str(k):>9}" for k in ks)
    has_ref = any(r.agreement for r in results)
    if has_ref:
        head += f"{'same top-1':>12}{'KL mean':>10}{'max |dz|':>10}"
    head += f"{'samples/s':>11}"
    lines = [head]
    for r in results:
        row = f"{r.name[-36:]:<36}" + "".join(f"{100 * r.topk[k]:>8.2f}%" for k in ks)
        if has_ref and r.agreement:
            a = r.agreement
            row += f"{100 * a.same_top1:>11.2f}%{a.kl_mean:>10.2e}{a.max_abs_logit_error:>10.3g}"
        row += f"{r.samples / r.seconds if r.seconds else float('nan'):>11.1f}"
        lines.append(row)
    for r in results:
        if r.worst:
            lines.append(f"worst samples of {r.name}: " + ", ".join(
                f"{w.get('name', w['index'])} (label {w.get('label', '?')}, predicted {w['predicted']})"
                for w in r.worst))
    refs = {r.agreement.reference for r in results if r.agreement}
    lines += [f"reference: {ref}" for ref in refs]
    lines.append(f"{results[0].samples} samples; computed by {results[0].workers}")
    return "\n".join(lines)


def _plot(results, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise HetrtError("--plot needs matplotlib: pip install 'hetrt[plots]'") from None
    import io

    from engine.ir.fileio import atomic_write_bytes, check_writable

    check_writable(path)
    ks = sorted({k for r in results for k in r.topk})
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(results)), 3.2))
    width = 0.8 / max(1, len(ks))
    for j, k in enumerate(ks):
        ax.bar([i + j * width for i in range(len(results))], [100 * r.topk.get(k, 0) for r in results], width,
               label=f"top-{k}")
    ax.set_xticks([i + width * (len(ks) - 1) / 2 for i in range(len(results))])
    ax.set_xticklabels([Path(r.name).name for r in results], rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"hetrt eval: {results[0].samples} samples")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def cmd_eval(args: argparse.Namespace) -> int:
    from engine.evaluation import EvalOptions, Preprocess, evaluate, open_dataset
    from engine.ir.fileio import atomic_write_text, check_writable

    for out in (args.json, args.plot):
        if out:
            check_writable(out)
    options = EvalOptions(tuple(args.top_k), args.workers, args.cluster, args.shard_batches, args.output,
                          args.confusion, args.worst)
    options.validate()
    pp = Preprocess(args.resize, args.crop, args.scale, args.mean, args.std, args.layout, args.channels)
    plans = [(t, _load_target(t, args.batch)) for t in args.targets]
    from engine.ir.logger import Logger, Severity
    from engine.runtime import Runtime

    engines = [Runtime(Logger(Severity.ERROR)).deserialize(data) for _, data in plans]  # once per plan
    eng = engines[0]
    sample_ndim = len(eng.get_tensor_shape(eng.input_names[0])) - 1
    dataset = open_dataset(args.data, args.labels, sample_ndim, pp)
    results = evaluate(plans, dataset, options, args.reference, _progress, engines)
    print(format_results(results))
    if args.json:
        atomic_write_text(args.json, json.dumps({"data": args.data, "results": [r.to_dict() for r in results]},
                                                indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        _plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


run = cmd_eval
