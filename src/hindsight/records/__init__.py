"""The ground floor of experiments: dataset loading, append-only result files, stats and ranking metrics.

Imports nothing above it (no reverse/, samplers/, twists/, potentials/, experiments/ or api/).
"""
