"""The service as a Ray Serve application: ``serve run rlhf_update_server.ray_serve:app``.

Each replica builds `create_app(load_settings())` from its own environment (set it with
the Serve config's ``runtime_env.env_vars``) and serves it through ``serve.ingress``; Serve
runs the app's lifespan in the replica, so readiness, the concurrency gate and the metrics
are those of a uvicorn worker. Besides HTTP, `UpdateService.post_block` answers a POST
through a `DeploymentHandle`, through the very same ASGI app, so a block sent by a handle
is validated, limited and counted as if it had come over HTTP.

Needs the extra ``rlhf-update[ray]``; nothing else in the package imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx2
from fastapi import FastAPI
from ray import serve
from ray.serve import Deployment
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api.request_id import REQUEST_ID_HEADER
from .main import create_app
from .ops.context import scope_header
from .settings import load_settings

__all__ = ["UpdateService", "app"]

# The handle's requests never leave the replica: this is only the Host header they carry.
_IN_PROCESS_URL = "http://ray-serve-handle"


_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode()


class _ProxiedRequestId:
    """The app for Serve's HTTP proxy, which stamps X-Request-ID on every answer itself.

    The proxy passes the client's id in (or one of its own) and adds it to the answer; the
    app's own header, when it is that same id, would repeat it (``ray-1, ray-1`` to a
    reader that joins them). A client id the app refuses as a request id is answered with
    the app's fresh one beside the proxy's copy of the client's.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = scope_header(scope, _REQUEST_ID_KEY) if scope["type"] == "http" else None
        if incoming is None:
            await self.app(scope, receive, send)
            return

        async def send_once(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if headers.get(REQUEST_ID_HEADER) == incoming:
                    del headers[REQUEST_ID_HEADER]
            await send(message)

        await self.app(scope, receive, send_once)


def _build_asgi_app() -> ASGIApp:
    # Called by Serve in each replica at start, so settings come from the replica's
    # environment; a setting that is not valid fails the replica with SettingsError's
    # one-line message, which `serve status` shows.
    return _ProxiedRequestId(create_app(load_settings()))


class _UpdateReplica:
    """The FastAPI service on HTTP, and `post_block` for a `DeploymentHandle`."""

    def __init__(self) -> None:
        self._client: httpx2.AsyncClient | None = None

    async def post_block(
        self, path: str, content: bytes, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """POST `content` to `path` of this replica's app; return status, headers, body.

        Header names come back in lower case, as `rlhf_client.HandleTransport` expects.

        Raises
        ------
        ValueError
            When `path` is not an absolute path of the service (``"/update"``).
        """
        if not path.startswith("/") or path.startswith("//"):
            msg = f"path must be a path of the service such as '/update', not {path!r}"
            raise ValueError(msg)
        if self._client is None:
            # Made on first use, on the replica's event loop. The very app whose lifespan
            # Serve ran, so gate, upload budget and metrics are shared with HTTP; inside
            # the proxy's layer, since no proxy stamps the id on a handle's answer.
            proxied: _ProxiedRequestId = self.app  # type: ignore[attr-defined]
            # A 500 the app sent is an answer, as over HTTP: not an exception that Ray
            # would carry to the caller with the replica's traceback.
            transport = httpx2.ASGITransport(app=proxied.app, raise_app_exceptions=False)
            self._client = httpx2.AsyncClient(transport=transport, base_url=_IN_PROCESS_URL)
        response = await self._client.post(path, content=content, headers=dict(headers))
        answer_headers = {name.lower(): value for name, value in response.headers.items()}
        return response.status_code, answer_headers, response.content


# Called, not stacked as class decorators, which mypy would not apply to the name.
UpdateService: Deployment = serve.deployment(name="UpdateService")(
    serve.ingress(_build_asgi_app)(_UpdateReplica)
)

# The application `serve run`, `serve deploy` and KubeRay's serveConfigV2 import by path;
# replicas, autoscaling and resources come from the Serve config (deploy/ray/).
app = UpdateService.bind()
