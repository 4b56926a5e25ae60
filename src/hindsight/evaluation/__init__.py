"""Evaluation: log-partition bounds, task metrics, dataset loading, and result files that resume."""
