"""`python -m app.ops.healthcheck`: exit 0 when the local service answers /healthz, no curl."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from ..settings import SettingsError, load_settings


def main() -> int:
    """Probe http://127.0.0.1:PORT/healthz once; 0 on HTTP 200, 1 otherwise."""
    try:
        port = load_settings().port
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
