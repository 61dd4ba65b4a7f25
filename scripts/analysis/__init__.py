"""Offline analysis of finished runs, from their metrics.jsonl alone (no training code runs).

    compare      per-run summaries, best run per optimizer, tables (orthogpt-compare: compare_cli)
    figures      every comparison and study figure (the run's own loss curve: trainer/loss_curve.py)
    plot_cli     loss curves of several runs into one PNG (orthogpt-plot)
"""
