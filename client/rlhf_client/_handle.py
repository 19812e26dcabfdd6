"""`HandleTransport`: a sharded update's blocks through a Ray Serve `DeploymentHandle`.

The handle calls ``UpdateService.post_block`` (``rlhf_update_server.ray_serve``), which runs
the POST through the replica's own ASGI app: the answer is the one HTTP would give. Ray is
imported only when a transport is made, so the client installs and imports without it.

    from ray import serve

    handle = serve.get_deployment_handle("UpdateService", app_name="rlhf-update")
    transport = HandleTransport(handle)

The handle routes each call to the least loaded replica, not to an address: for the blocks
of one update to spread over replicas, give the deployment ``max_ongoing_requests: 1``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from rlhf_client._errors import APIConnectionError, APITimeoutError
from rlhf_client._transport import BlockAnswer

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle, DeploymentResponse

__all__ = ["HandleTransport"]


class HandleTransport:
    """A `BlockTransport` over a `DeploymentHandle` of the ``UpdateService`` deployment.

    A replica that died or that Serve cannot reach raises `APIConnectionError`, and no
    answer within `timeout` seconds (None: wait for ever) `APITimeoutError`, as a broken
    or slow HTTP connection would; the call is then cancelled.
    """

    def __init__(self, handle: DeploymentHandle[Any], *, timeout: float | None = 60.0) -> None:
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import RayServeException

        self._handle = handle
        self._timeout = timeout
        # Not RayTaskError: an exception raised in post_block itself is a bug, not a network.
        self._unreachable = (RayActorError, RayServeException)

    async def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> BlockAnswer:
        """POST `content` to `path` of one replica's app with `headers`; its answer."""
        # post_block is not a generator, so the call is a unary DeploymentResponse.
        response = cast(
            "DeploymentResponse[Any]",
            self._handle.post_block.remote(path, content, dict(headers)),
        )
        try:
            status, answer_headers, body = await asyncio.wait_for(_awaited(response), self._timeout)
        except TimeoutError as exc:
            response.cancel()  # type: ignore[no-untyped-call]
            msg = f"no answer from a replica within {self._timeout} s: {path}"
            raise APITimeoutError(msg) from exc
        except self._unreachable as exc:
            msg = f"could not reach a replica of the deployment: {exc!r}"
            raise APIConnectionError(msg) from exc
        return BlockAnswer(status=status, headers=answer_headers, content=body)

    async def aclose(self) -> None:
        """Nothing to release: the handle belongs to its caller, who may share it."""


async def _awaited(response: DeploymentResponse[Any]) -> Any:
    return await response
