"""Errors for bad input data: one-line messages naming the file, row and field, shown without a traceback."""


class DataError(ValueError):
    """Bad or missing input data; ``str(err)`` is one actionable line naming the file/row/field."""
