"""`python -m tests.helpers.healthz_probe URL`: time GET URL/healthz until stdin has a line.

Prints `ready` once its first answer came back, then, at the end, the JSON list of the
`[status, seconds]` of every probe. It runs in a process of its own so that what it times
is the server: in the test process, a full garbage collection of the objects a thousand
tests leave behind, or the thread sending a large body, pauses a probe for longer than
the latency a test asserts.
"""

from __future__ import annotations

import json
import select
import sys
import time

import httpx2

PAUSE_SECONDS = 0.005


def main(base_url: str) -> None:
    probes: list[tuple[int, float]] = []
    with httpx2.Client(base_url=base_url, timeout=5) as client:
        client.get("/healthz")  # the connection open before the timed probes
        print("ready", flush=True)
        while not select.select([sys.stdin], [], [], PAUSE_SECONDS)[0]:
            start = time.perf_counter()
            status = client.get("/healthz").status_code
            probes.append((status, time.perf_counter() - start))
    print(json.dumps(probes), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
