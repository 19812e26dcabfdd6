"""What the lifespan does to the process beyond readiness."""

from __future__ import annotations

import asyncio
import gc
import signal
from types import FrameType

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.ops.lifecycle import Phase
from app.settings import Settings


def test_what_the_started_process_holds_is_frozen_until_shutdown(settings: Settings) -> None:
    before = gc.get_freeze_count()
    with TestClient(create_app(settings)) as client:
        # The modules and the app, tens of thousands of objects, left out of every full
        # collection while the service serves.
        assert gc.get_freeze_count() > before + 10_000
        assert client.get("/healthz").status_code == 200
    assert gc.get_freeze_count() == 0


def test_a_sigterm_before_the_startup_ends_leaves_the_service_stopping(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The signal comes once the drain's handler is in place, before the startup is done
    # (here, while what the process holds is frozen): /readyz must say "stopping" for the
    # whole drain, and the server's own handler gets the signal once the drain is over.
    drain = 0.05
    app = create_app(settings.model_copy(update={"shutdown_drain_seconds": drain}))
    handed_over: list[int] = []

    def server_handler(signum: int, frame: FrameType | None) -> None:
        handed_over.append(signum)

    freeze = gc.freeze

    def freeze_then_sigterm() -> None:
        freeze()
        signal.raise_signal(signal.SIGTERM)

    async def phases() -> list[Phase]:
        seen = []
        async with app.router.lifespan_context(app):
            seen.append(app.state.lifecycle.phase)
            await asyncio.sleep(drain + 0.2)
            seen.append(app.state.lifecycle.phase)
        return seen

    previous = signal.signal(signal.SIGTERM, server_handler)
    monkeypatch.setattr(gc, "freeze", freeze_then_sigterm)
    try:
        seen = asyncio.run(phases())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [Phase.STOPPING, Phase.STOPPING]
    assert handed_over == [signal.SIGTERM]
