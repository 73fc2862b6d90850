"""`./run.sh COMMAND ...`: parse the command line (cli.parser) and dispatch to one handler (cli.commands).

Exit codes: 0 success; 1 a user error (one line naming the file and the record); 2 usage error; 130 Ctrl-C.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys

from competition.cli.output import json_stdout
from competition.cli.parser import build_parser
from competition.core.errors import UserError, user_message
from competition.core.interrupt import interrupts
from competition.core.progress import bars_off
from competition.core.redact import redact

__all__ = ["main"]

DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # no space, over RLIMIT_FSIZE / file size, over quota
# A place the user named that cannot hold what the command writes (a runs folder that is a file, a read-only
# disk, a report path that is a folder): one line naming it, whichever module met it first.
PLACE_ERRORS = {
    errno.ENOTDIR: "a file stands where a folder is needed",
    errno.EISDIR: "is a folder, not a file",
    errno.EACCES: "not writable",
    errno.EPERM: "not writable",
    errno.EROFS: "on a read-only file system",
    errno.ENOENT: "not found, or its folder cannot be created",
}


def secret_sources(args) -> list[str]:
    """URLs whose credentials no message may show: --storage and the MLflow tracking URI."""
    return [u for u in (getattr(args, "storage", None), os.environ.get("MLFLOW_TRACKING_URI")) if u]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        quiet = getattr(args, "json", False)  # --json: one JSON object, plain log lines, no bars
        with (
            interrupts(),
            json_stdout() if quiet else contextlib.nullcontext(),
            bars_off() if quiet else contextlib.nullcontext(),
        ):
            from competition.cli import commands  # after parsing: `--help` and usage errors stay instant

            return getattr(commands, args.handler)(args)
    except UserError as e:
        print(f"error: {redact(user_message(e), secret_sources(args))}", file=sys.stderr)  # a last net for credentials
        return e.exit_code
    except OSError as e:
        if e.errno not in DISK_FULL:
            if e.errno not in PLACE_ERRORS or not e.filename:
                raise
            where = e.filename if not e.filename2 else f"{e.filename} -> {e.filename2}"
            print(f"error: {where}: {PLACE_ERRORS[e.errno]} ({e.strerror}); nothing was written there",
                  file=sys.stderr)  # fmt: skip
            return 1
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}disk full ({e.strerror}); finished work is kept and no half file is left; "
              "free space and re-run the same command", file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; re-run the same command to resume", file=sys.stderr)
        return 130
