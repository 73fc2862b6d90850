"""The exception types for bad input: the CLI prints the message on one line and exits 1 (or 2 for usage)."""


class UserError(Exception):
    """Bad input from the user: a file, a record, a setting. The message names the file and the record."""

    exit_code = 1


class UsageError(UserError):
    """A bad command line or setting: unknown key, wrong type, out of range, conflicting flags (exit 2)."""

    exit_code = 2
