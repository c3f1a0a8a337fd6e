"""User-facing errors.

Anything a user can cause (a missing file, a bad config value, an unknown model name) raises
`SeglabError` with one line that names the file, key or value and what was expected. The CLI prints
that line and exits with status 2; a traceback is shown only with `--debug`. Output files that cannot
be written raise `OutputError` (see `seglab.utils.io`).
"""


class SeglabError(Exception):
    """A mistake in the user's input, reported as one clear line."""


class ConfigError(SeglabError):
    """A config key or value is unknown or invalid (the message names its dotted path)."""


class DataError(SeglabError):
    """A data file is missing, unreadable or inconsistent (the message names the file)."""


class OutputError(SeglabError, OSError):
    """An output file could not be written (disk full, read-only folder, a path that is a file); the
    message says what failed where and that the previous file is intact. Also an `OSError`, so code that
    handles I/O errors keeps handling it."""
