"""Errors that are the user's to fix: the apps print their one-sentence message and exit non-zero."""


class UserError(Exception):
    """Bad input (missing dataset, bad checkpoint, out-of-range option): the message says what is
    wrong and what to do; entry points show it without a traceback."""


class Interrupted(Exception):
    """A run stopped by a signal (SIGTERM from a scheduler, Ctrl-C): the message says what was saved and how
    to resume; the app exits with ``status`` (128 + the signal's number, as a shell reports it)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
