"""The ``rnnlab serve`` web app: :func:`create_app` over loaded models, and the page it serves (``static/``)."""

from pipelines.serve.app import Limits, create_app

__all__ = ["Limits", "create_app"]
