"""The one error of the inference layer: a ``ValueError`` whose message is one line for the user."""


class InferenceError(ValueError):
    """A model, a file or an input that cannot be used; ``str()`` is one line naming it."""
