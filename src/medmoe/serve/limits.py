"""An ASGI middleware that refuses request bodies over a size limit before they are parsed.

Checking the size inside an endpoint is too late: by then the multipart parser has already spooled
the whole upload to disk. This middleware answers ``413`` at once when ``Content-Length`` declares
too much, and stops a body sent without one (chunked) as soon as it grows past the limit.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Refuse bodies of more than ``max_bytes`` on the given paths with ``413 {"detail": message}``.

    Args:
        app: the wrapped ASGI app.
        max_bytes: the largest body accepted (the whole multipart body, fields and boundaries included).
        paths: request paths the limit applies to.
        message: the ``detail`` of the 413 answer.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, paths: tuple[str, ...], message: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.paths = paths
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            # An HTTPException passes through FastAPI's body parsing unchanged and becomes the answer.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, limited_receive, send)
