"""`python -m app`: serve the application with uvicorn, configured by `Settings`."""

from __future__ import annotations

import uvicorn

from app.settings import Settings


def main() -> None:
    """Serve `app.main:app` on HOST:PORT at RLHF_LOG_LEVEL."""
    settings = Settings()
    uvicorn.run(
        "app.main:app", host=settings.host, port=settings.port, log_level=settings.log_level
    )


if __name__ == "__main__":
    main()
