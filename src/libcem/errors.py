"""The one exception type that the CLI turns into a one-line message instead of a traceback."""


class LibcemError(Exception):
    """A problem the user can fix (bad input, bad config, missing data): shown as one line."""
