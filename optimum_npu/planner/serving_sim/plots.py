"""PNG plots of an SLO search (matplotlib, headless): latency against request rate with the SLO lines,
memory per device stacked by category, and the decode-bucket histogram."""

from __future__ import annotations

from pathlib import Path

MEMORY_CATEGORIES = (("weights", "weights"), ("kv_cache", "KV cache pool"), ("workspace", "workspace"),
                     ("collective_buffers", "collective buffers"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_rate_plot(curves: dict[str, list], slo: dict[str, float], path: Path,
                      target_rate: float | None = None) -> Path:
    """One panel per SLO metric: its value (ms) against the request rate (req/s) for each labelled curve of
    ``ServingMetrics``, with the SLO as a dashed line and the workload's rate (``target_rate``) as a dotted one."""
    plt = _pyplot()
    terms = sorted(slo)
    fig, axes = plt.subplots(1, len(terms), figsize=(6 * len(terms), 4.2), squeeze=False)
    for axis, term in zip(axes[0], terms):
        for label, points in curves.items():
            points = sorted(points, key=lambda m: m.rate)
            axis.plot([m.rate for m in points], [m.latency[term] * 1e3 for m in points], marker="o", ms=3,
                      label=label)
        axis.axhline(slo[term] * 1e3, color="red", linestyle="--", label=f"SLO {term} = {slo[term] * 1e3:g} ms")
        if target_rate:
            axis.axvline(target_rate, color="gray", linestyle=":", label=f"workload rate {target_rate:g} req/s")
        axis.set_xlabel("request rate (requests/s)")
        axis.set_ylabel(f"{term.replace('_', ' ').upper()} (ms)")
        axis.set_yscale("log")
        axis.set_title(f"{term.replace('_', ' ')} vs load (each chosen deployment, all its replicas)")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def memory_plot(bars: dict[str, tuple[dict[str, int], int]], path: Path) -> Path:
    """Stacked memory per device (GB) by category for each labelled deployment, with its device capacity."""
    plt = _pyplot()
    labels = list(bars)
    fig, axis = plt.subplots(figsize=(max(6, 2.6 * len(labels)), 4.8))
    bottoms = [0.0] * len(labels)
    for key, name in MEMORY_CATEGORIES:
        values = [bars[label][0].get(key, 0) / 1e9 for label in labels]
        if any(values):
            axis.bar(range(len(labels)), values, bottom=bottoms, label=name, width=0.6)
            bottoms = [b + v for b, v in zip(bottoms, values)]
    for index, label in enumerate(labels):
        axis.hlines(bars[label][1] / 1e9, index - 0.4, index + 0.4, colors="black", linestyles="--",
                    label="device memory (capacity)" if index == 0 else None)
    axis.set_xticks(range(len(labels)))
    axis.set_xticklabels([label.replace(": ", "\n", 1) for label in labels], fontsize=8)
    axis.set_ylabel("memory per device (GB)")
    axis.set_title("memory per device of the chosen deployments")
    axis.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bucket_plot(histograms: dict[str, dict[str, int]], path: Path) -> Path:
    """Graph calls per decode bucket (share of decode steps) for each labelled deployment, at its goodput."""
    plt = _pyplot()
    graphs = sorted({g for h in histograms.values() for g in h if g != "prefill"}, key=lambda g: int(g.rsplit("_")[-1]))
    fig, axis = plt.subplots(figsize=(max(6, 1.2 * len(graphs) * max(1, len(histograms)) / 2), 4.2))
    width = 0.8 / max(1, len(histograms))
    for index, (label, histogram) in enumerate(histograms.items()):
        total = sum(n for g, n in histogram.items() if g != "prefill") or 1
        axis.bar([i + index * width for i in range(len(graphs))],
                 [100 * histogram.get(g, 0) / total for g in graphs], width, label=label)
    axis.set_xticks([i + width * (len(histograms) - 1) / 2 for i in range(len(graphs))])
    axis.set_xticklabels([f"batch {g.rsplit('_')[-1]}" for g in graphs])
    axis.set_xlabel("decode bucket (compiled decode batch)")
    axis.set_ylabel("share of decode steps (%)")
    axis.set_title("decode bucket histogram at goodput")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
