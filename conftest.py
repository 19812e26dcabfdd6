"""What pytest collects depends on what is installed: app/ray_serve.py needs the extra [ray]."""

from __future__ import annotations

import importlib.util

# --doctest-modules imports every module of app/; without Ray that one cannot be imported
# (its tests skip themselves, saying why). Looked up, not imported: Ray reads some of its
# settings once, at import, and tests/conftest.py sets them first.
collect_ignore = [] if importlib.util.find_spec("ray") else ["app/ray_serve.py"]
