"""The one error type of the lab: a sentence for a person, shown without a traceback."""


class LabError(Exception):
    """Something the operator can act on (bad input, missing rights, a host that never came up)."""
