"""Errors about the user's input: a config, a path, a data file. Command-line entry points
print their message as one line and exit 2 (`--debug` shows the traceback instead)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix; the message names the file, field or value."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the input names does not exist or is not what it should be."""


def report(err: UserError, debug: bool) -> int:
    """The exit status of a command that failed on `err`: 2, after one line on stderr
    (or re-raise it with `debug`)."""
    import sys

    if debug:
        raise err
    print(f"error: {err}", file=sys.stderr)
    return 2
