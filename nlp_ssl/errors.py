"""User-facing errors: each carries one line that names the file, row or key at fault.

The CLI prints ``error: <message>`` for these and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class NlpSslError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""

    exit_code = 2


class ConfigError(NlpSslError):
    """A recipe or override is malformed: unknown key, wrong type, bad value."""


class DataError(NlpSslError):
    """A dataset cannot be found or read, or its content is not what the stage expects."""


class OutputError(NlpSslError):
    """An output directory cannot be written without losing something the user has."""


class Interrupted(NlpSslError):
    """SIGINT/SIGTERM stopped a command cleanly (what it kept is in the message)."""

    exit_code = 130
