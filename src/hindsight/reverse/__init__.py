"""Time-reversed language models (TRLM): reverse scoring and generation, training, applications."""
