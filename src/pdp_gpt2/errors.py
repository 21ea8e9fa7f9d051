"""Errors a user can cause.  The CLI turns them into one line on stderr and exit status 2."""


class UsageError(ValueError):
    """Bad input the user can fix (a path, a flag value, a dataset spec)."""


class UsageTypeError(UsageError, TypeError):
    """A value of the wrong type (a string where a number or a list belongs); a UsageError all the same."""
