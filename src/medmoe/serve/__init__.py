"""``medmoe serve``: score images over HTTP, with a one-page web UI.

::

    from medmoe import Detector
    from medmoe.serve import create_app

    app = create_app(Detector.load("runs/paper"), max_upload_mb=20)   # any ASGI server runs it

See :mod:`medmoe.serve.app` for the endpoints and their errors.
"""

from medmoe.serve.app import create_app

__all__ = ["create_app"]
