"""Reports: result tables (Markdown, CSV, JSON) and the paper's figures, all written atomically."""

from medmoe.report.figures import plot_examples, plot_expert_heatmap, plot_score_histograms, plot_tsne
from medmoe.report.tables import (
    format_mean_std,
    markdown_table,
    metrics_table,
    seeds_metrics_table,
    write_csv,
    write_json,
)

__all__ = [
    "format_mean_std",
    "markdown_table",
    "metrics_table",
    "plot_examples",
    "plot_expert_heatmap",
    "plot_score_histograms",
    "plot_tsne",
    "seeds_metrics_table",
    "write_csv",
    "write_json",
]
