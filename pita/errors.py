"""One exception type for user-facing input problems.

The CLI turns a PitaInputError into a single line on stderr and exit status 2, so every
message must name the file or config field and the problem.
"""


class PitaInputError(ValueError):
    """Bad user input: a file, config field or sample set that cannot be used."""
