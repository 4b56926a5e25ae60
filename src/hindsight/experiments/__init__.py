"""Every experiment (``hindsight eval ...`` and the log Z bounds) on one item runner (``runner.py``)."""
