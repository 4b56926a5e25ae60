"""Samplers: how to get to p * phi (ancestral, best-of-N, SMC, twisted SMC, RAIN)."""
