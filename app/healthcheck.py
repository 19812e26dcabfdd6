"""`python -m app.healthcheck`: exit 0 when the local service answers /healthz (no curl needed)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from app.settings import Settings


def main() -> int:
    """Probe http://127.0.0.1:PORT/healthz once; 0 on HTTP 200, 1 otherwise."""
    url = f"http://127.0.0.1:{Settings().port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
