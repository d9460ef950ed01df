"""User-facing errors.

A :class:`CharopsError` is a mistake the user can fix (a bad file, record, field or option).
The CLI prints its message on one line and exits non-zero without a traceback (``--debug``
shows one). Anything else escaping is a bug and keeps its traceback.
"""


class CharopsError(Exception):
    """An error caused by input the user controls; the message says what to do."""

    exit_code = 2


class ConfigError(CharopsError):
    """A configuration file or ``key=value`` override is wrong."""


class DataError(CharopsError):
    """A data file or record is wrong."""
