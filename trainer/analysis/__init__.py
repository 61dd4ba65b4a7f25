"""Offline analysis of finished runs, from their metrics.jsonl alone (no training code runs).

    compare      per-run summaries, best run per optimizer, tables (orthogpt-compare: compare_cli)
    plotting     loss curves, lr sensitivity (orthogpt-plot: plot_cli)
"""
