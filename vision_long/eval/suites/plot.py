"""Bar chart of one suite's metrics: our models beside the published rows chosen for comparison."""

from __future__ import annotations

from collections.abc import Sequence

from vision_long.eval.suites.published import PublishedRow
from vision_long.eval.suites.runner import BenchmarkResult


def plot_benchmark(
    results: dict[str, BenchmarkResult], out: str, published: Sequence[PublishedRow] = (), labels: dict | None = None
) -> None:
    """Grouped bars, one group per metric (percent), one bar per model (ours solid, published hatched).

    results: model spec -> result, all of the same suite; labels: metric key -> column title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(results.values()))
    keys = list(first.metrics)
    bars = [(spec, [r.metrics.get(k) for k in keys], False) for spec, r in results.items()]
    for row in published:
        unverified = " (not verified)" if any(level == "recall" for _, level in row.values.values()) else ""
        bars.append((f"{row.model} [{row.source}]{unverified}", [row.values.get(k, (None,))[0] for k in keys], True))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(keys) + 0.3 * len(bars)), 4.5))
    for i, (name, values, is_published) in enumerate(bars):
        xs = [k + (i - (len(bars) - 1) / 2) * width for k, v in enumerate(values) if v is not None]
        ys = [v for v in values if v is not None]
        ax.bar(xs, ys, width, label=name, hatch="//" if is_published else None, alpha=0.6 if is_published else 1.0)
    ax.set_xticks(range(len(keys)), [(labels or {}).get(k, k) for k in keys])
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    split = f" ({first.split})" if first.split else ""
    ax.set_title(f"{first.suite}{split}, truncate {'on' if first.truncate else 'off'}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
