"""The one error type for bad user input (files, specs, programs, flags, checkpoints of another model).

Validators of what a user gives raise :class:`UserError`; the command line prints it in one line
and exits with status 2. Anything else that escapes a command is a bug: one line, exit status 1,
and ``--debug`` shows the traceback. :class:`UserError` subclasses ``ValueError``, so code that
catches ``ValueError`` keeps working; :class:`UserFileNotFoundError` is also a
``FileNotFoundError`` (a file the user named is missing).
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: the message says what and where, in one line."""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


__all__ = ["UserError", "UserFileNotFoundError"]
