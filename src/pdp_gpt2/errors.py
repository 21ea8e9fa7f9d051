"""Errors a user can cause.  The CLI turns them into one line on stderr and exit status 2."""


class UsageError(ValueError):
    """Bad input the user can fix (a path, a flag value, a dataset spec)."""
