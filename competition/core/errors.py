"""The exception types for bad input: the CLI prints the message on one line and exits 1 (or 2 for usage)."""


class UserError(Exception):
    """Bad input from the user: a file, a record, a setting. The message names the file and the record."""

    exit_code = 1


class UsageError(UserError):
    """A bad command line or setting: unknown key, wrong type, out of range, conflicting flags (exit 2)."""

    exit_code = 2


def first_line(e: BaseException, limit: int = 200) -> str:
    """An exception's message as one line for an error or log line (its type when it has no message)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


def user_message(e: UserError, limit: int = 2000) -> str:
    """The one line the CLI prints for a UserError. One raised in a DataLoader worker arrives re-raised by
    torch with the worker's traceback as its message: its last line is the message. Newlines never reach
    the terminal, and an enormous value quoted in a message is cut."""
    text = str(e).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
