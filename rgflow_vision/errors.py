"""Errors that are the user's to fix: the apps print their one-sentence message and exit non-zero."""


class UserError(Exception):
    """Bad input (missing dataset, bad checkpoint, out-of-range option): the message says what is
    wrong and what to do; entry points show it without a traceback."""
