"""What the lifespan does to the process beyond readiness."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings


def test_what_the_started_process_holds_is_frozen_until_shutdown(settings: Settings) -> None:
    before = gc.get_freeze_count()
    with TestClient(create_app(settings)) as client:
        # The modules and the app, tens of thousands of objects, left out of every full
        # collection while the service serves.
        assert gc.get_freeze_count() > before + 10_000
        assert client.get("/healthz").status_code == 200
    assert gc.get_freeze_count() == 0
