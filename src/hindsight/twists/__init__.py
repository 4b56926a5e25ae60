"""Learned twist functions for twisted SMC: heads on the frozen LM, contrastive twist learning."""
