"""One exception type for mistakes a user can fix; the CLI prints its message as one line and exits 2."""


class HindsightError(Exception):
    """A readable, one-sentence error about bad input or a missing resource."""
