"""A bar chart of each domain's headline metric per variant, from an evaluation report."""

from __future__ import annotations

from pathlib import Path


def plot_headlines(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    domains = report["domains"]
    fig, axes = plt.subplots(1, len(domains), figsize=(max(6.0, 4.2 * len(domains)), 3.8), squeeze=False)
    for ax, (domain, result) in zip(axes[0], domains.items()):
        names = result.get("order") or list(result["variants"])
        values = [result["variants"][n]["metrics"].get(result["headline"], {}).get("value") for n in names]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(names, heights, color=[f"C{i}" for i in range(len(names))])
        for bar, value in zip(bars, values):
            label = "n/a" if value is None else f"{value:.3f}"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
        ax.set_title(f"{domain}\n{result['headline']} ({result['better']} is better)", fontsize=9)
        ax.set_ylim(0, max(1.0, max(heights) * 1.15))
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    config = report["config"]
    fig.suptitle(f"{report.get('model', '')}\nseed {report['seed']}, limit {config['limit']}, k={config['samples']}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
