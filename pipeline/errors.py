"""The one exception type for user errors: bad input, bad config, missing files.

The CLI prints a ``UserError`` as one line (``error: ...``) and exits with status 2, without a
traceback. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error the user can fix: its message is printed as one line."""
