"""The one exception type for bad input: the CLI prints its message on one line and exits 1."""


class UserError(Exception):
    """Bad input from the user: a file, a record, a setting. The message names the file and the record."""
