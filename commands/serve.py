"""``eventpile serve --sync``: other installations sync with this one over HTTP.

The server keeps a sync folder in the home (``HOME/sync``) and lets installations of
the same user read it and write their own files in it, as they do with a shared
folder (see :mod:`eventpile.store.remote` for how each request proves it holds the
keys, and :mod:`eventpile.commands.sync` for the exchange); ``POST /sync/run`` syncs
this installation's log with the folder, which a client asks for before it reads
and after it writes. ``join`` fetches the key file with the token printed at start.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from eventpile.store.remote import PREFIX, check, check_form
from eventpile.store.segments import HEAD, LocalFiles

MAX_BODY: Final = 256 << 20
"""The largest file a client may write (a segment of 5,000 events is far less)."""
_ORIGIN: Final = re.compile(r"^[0-9a-f]{32}$")
_OWN_FILE: Final = re.compile(rf"^([0-9a-f]{{32}})/([0-9a-f]{{16}}-[0-9a-f]{{16}}\.seg|{HEAD})$")


def sync_server(
    folder: Path, key: bytes, token: str, key_file: Path, run: Callable[[], dict[str, Any]]
) -> Starlette:
    """The web application: ``folder`` served to those who prove ``key``; ``run`` syncs
    this installation's log with it (one at a time)."""
    files = LocalFiles(folder)
    running = threading.Lock()
    unused = [token]  # the join token works once

    async def proven(request: Request) -> tuple[str, bytes]:
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY:
            raise PermissionError(f"a request body is at most {MAX_BODY:,} bytes")
        check_form(request.headers.get("authorization"), time.time())
        body = await request.body()
        if len(body) > MAX_BODY:
            raise PermissionError(f"a request body is at most {MAX_BODY:,} bytes")
        origin = check(
            key,
            request.headers.get("authorization"),
            request.method,
            request.url.path,
            body,
            time.time(),
        )
        return origin.hex, body

    async def origins(request: Request) -> Response:
        await proven(request)
        return _json([o for o in files.origins() if _ORIGIN.match(o)])

    async def names(request: Request) -> Response:
        await proven(request)
        origin = request.path_params["origin"]
        return _json(files.names(origin) if _ORIGIN.match(origin) else [])

    async def get(request: Request) -> Response:
        await proven(request)
        name = request.path_params["name"]
        data = files.get(name) if _OWN_FILE.match(name) else None
        return PlainTextResponse("no such file", 404) if data is None else Response(data)

    async def put(request: Request) -> Response:
        who, body = await proven(request)
        name = request.path_params["name"]
        match = _OWN_FILE.match(name)
        if match is None or match[1] != who:
            return PlainTextResponse("an installation writes only its own files", 403)
        await run_in_threadpool(files.put, name, body)
        return Response(status_code=204)

    async def sync_now(request: Request) -> Response:
        await proven(request)

        def once() -> dict[str, Any]:
            with running:
                return run()

        return _json(await run_in_threadpool(once))

    async def keys(request: Request) -> Response:
        given = request.query_params.get("token", "")
        if not unused or not hmac.compare_digest(given, unused[0]):
            return PlainTextResponse(
                "the join token is wrong or used (restart serve for a new one)", 403
            )
        unused.clear()
        return Response(key_file.read_bytes())

    async def refused(request: Request, error: Exception) -> Response:
        return PlainTextResponse(str(error), 401)

    return Starlette(
        routes=[
            Route(f"{PREFIX}/origins", origins, methods=["GET"]),
            Route(f"{PREFIX}/names/{{origin}}", names, methods=["GET"]),
            Route(f"{PREFIX}/files/{{name:path}}", get, methods=["GET"]),
            Route(f"{PREFIX}/files/{{name:path}}", put, methods=["PUT"]),
            Route(f"{PREFIX}/run", sync_now, methods=["POST"]),
            Route(f"{PREFIX}/keys", keys, methods=["GET"]),
        ],
        exception_handlers={PermissionError: refused},
    )


def _json(value: Any) -> Response:
    return Response(json.dumps(value), media_type="application/json")
