"""PNG plots of a study: the Pareto front, the placement strip and the per-device Gantt chart.

matplotlib is an optional extra (``pip install 'hetrt[plots]'``); without it plotting raises an
``UnsupportedError`` that says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.ir.errors import UnsupportedError

COLORS = {"gpu": "#76b900", "dla0": "#1f77b4", "dla1": "#17becf", "transfer": "#d62728"}


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UnsupportedError("plots need matplotlib: pip install 'hetrt[plots]'") from None
    return plt


def pareto_plot(points: Sequence, front: Sequence, path: str, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=90)
    modes = sorted({p.power_mode for p in points})
    markers = {"gpu-only": "s", "dla-first": "^", "best-single-cut": "D", "optimal": "o"}
    cmap = plt.get_cmap("viridis")
    for i, m in enumerate(modes):
        color = cmap(i / max(1, len(modes) - 1))
        for pol, mk in markers.items():
            sel = [p for p in points if p.power_mode == m and p.policy == pol]
            if sel:
                ax.scatter([p.latency_ms for p in sel], [p.energy_mj for p in sel], marker=mk, color=color,
                           s=40 if pol != "optimal" else 22, edgecolor="k" if pol != "optimal" else "none",
                           label=f"{m} {pol}", zorder=3)
    ax.plot([p.latency_ms for p in front], [p.energy_mj for p in front], "k--", lw=1, label="Pareto front", zorder=2)
    step = max(1, -(-len(front) // 12))  # label at most a dozen front points: power mode and objective
    for p in list(front)[::step]:
        ax.annotate(f"{p.power_mode} {p.objective}", (p.latency_ms, p.energy_mj), xytext=(4, 3),
                    textcoords="offset points", fontsize=6, zorder=4)
    ax.set_xlabel("latency per inference (ms, simulated)")
    ax.set_ylabel("energy per inference (mJ, simulated)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def placement_strip(layers: Sequence[str], rows: Mapping[str, Mapping[str, str]], path: str, title: str) -> None:
    plt = _plt()
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.0), dpi=90)
    for y, devs in enumerate(rows.values()):
        for x, name in enumerate(layers):
            ax.add_patch(plt.Rectangle((x, y), 1, 0.8, color=COLORS.get(devs.get(name, "gpu"), "#999")))
    ax.set_xlim(0, len(layers))
    ax.set_ylim(-0.2, len(rows))
    ax.set_yticks([y + 0.4 for y in range(len(rows))])
    ax.set_yticklabels(list(rows), fontsize=7)
    ax.set_xlabel("layer (execution order)")
    ax.set_title(title, fontsize=9)
    ax.legend(handles=[Patch(color=c, label=d) for d, c in COLORS.items() if d != "transfer"], fontsize=7,
              loc="upper right", bbox_to_anchor=(1.0, 1.35), ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def gantt(timeline, path: str, title: str) -> None:
    plt = _plt()
    from ..timeline import lanes_used

    lanes = lanes_used(timeline.events)
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(lanes) + 1.2), dpi=90)
    for y, lane in enumerate(lanes):
        for e in timeline.events:
            if e.lane == lane:
                ax.broken_barh([(e.start_s * 1e3, (e.end_s - e.start_s) * 1e3)], (y, 0.8),
                               facecolors=COLORS[lane], alpha=0.55 + 0.45 * (e.frame % 2), edgecolor="k",
                               linewidth=0.2)
    ax.set_yticks([y + 0.4 for y in range(len(lanes))])
    ax.set_yticklabels(lanes)
    ax.set_xlabel("time (ms, simulated target clock)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
