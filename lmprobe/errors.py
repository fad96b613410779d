"""One exception type for every mistake a user can make.

Entry points catch `LmprobeError` and print its message as a single line, so bad input never
surfaces as a traceback from deep inside a library.
"""


class LmprobeError(Exception):
    """A user-facing error: the message says what was wrong and what to do."""
