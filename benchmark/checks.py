"""The benchmark tools' shared flag rules: a broken rule stops the tool in one line, before any env is made."""


def at_least_one(**flags):
    """Counts (episodes, repeats, sizes) below 1 would divide by zero or time nothing."""
    for name, value in flags.items():
        if value < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1, got {value}")


def numpy_seeds(**flags):
    """numpy's generators take seeds in [0, 2^32)."""
    for name, value in flags.items():
        if not 0 <= value < 2**32:
            raise SystemExit(f"error: --{name.replace('_', '-')} must lie in [0, {2**32 - 1}], got {value}")
