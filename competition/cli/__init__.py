"""`./run.sh COMMAND ...`: parse the command line (cli.parser) and dispatch to one handler (cli.commands).

Exit codes: 0 success; 1 a user error (one line naming the file and the record); 2 usage error; 130 Ctrl-C.
"""

from __future__ import annotations

import contextlib
import errno
import sys

from competition.cli.output import json_stdout
from competition.cli.parser import build_parser
from competition.core.errors import UserError
from competition.core.interrupt import interrupts
from competition.core.progress import bars_off

__all__ = ["main"]

DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # no space, over RLIMIT_FSIZE / file size, over quota


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
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}disk full ({e.strerror}); finished work is kept and no half file is left; "
              "free space and re-run the same command", file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; re-run the same command to resume", file=sys.stderr)
        return 130
