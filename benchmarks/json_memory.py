"""`python -m benchmarks.json_memory`: a JSON body's peak memory by shape, accepted or refused.

Each case is decoded by `app.wire.json_codec.decode_request` in a fresh process (Linux:
VmHWM after clear_refs), and its growth printed as a ratio to the body. Zeros as `0.0`,
the shortest float literals orjson writes; the others are the same with the last entry
of the last row replaced (a string, or an integer beyond 64 bits, which only msgspec
reads) or left out (a short row), or a key added. `tests/system/test_json_memory.py`
runs the same measure.
`make bench` measures one of these shapes (64 x 234375, accepted) on the live service.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(64, 234_375), (1, 7_000_000), (1000, 15_000), (200_000, 60), (2_000_000, 4)]
CASES = ("accepted", "a big integer", "a string", "a short row", "an unknown key")

SCRIPT = """
import sys
from app.errors import ProblemError
from app.wire.json_codec import decode_request

b, n, case = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
zeros = lambda count: "[" + ",".join(["0.0"] * count) + "]"
last = {
    "a string": zeros(n - 1)[:-1] + ',"x"]',
    "a short row": zeros(n - 1),
    "a big integer": zeros(n - 1)[:-1] + "," + "1" * 30 + "]",
}.get(case, zeros(n))
rows = ",".join([zeros(n)] * (b - 1) + [last])
extra = ',"bogus":1' if case == "an unknown key" else ""
body = bytearray(
    f'{{"weights":{zeros(n)},"rewards":{zeros(b)},"policy_log_probs":{zeros(b)},'
    f'"ref_log_probs":{zeros(b)},"log_prob_grads":[{rows}],"beta":0.1,"lr":0.01{extra}}}'.encode()
)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS")
try:
    decode_request(body, None)
    outcome, message = "accepted", ""
except ProblemError as problem:
    outcome = str(problem.status)
    message = problem.problems[0].msg if problem.problems else problem.detail
print(len(body), (status("VmHWM") - before) / len(body), outcome, message)
"""


def main() -> None:
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("needs Linux's /proc (VmHWM after clear_refs)")
    print("| B x N | body MB | case | answer | peak growth x body |")
    print("|---|---:|---|---|---:|")
    for b, n in SHAPES:
        for case in CASES:
            command = [sys.executable, "-c", SCRIPT, str(b), str(n), case]
            out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
            size, growth, outcome = out.stdout.split(maxsplit=3)[:3]
            megabytes = int(size) / 1e6
            print(f"| {b} x {n} | {megabytes:.0f} | {case} | {outcome} | {float(growth):.2f} |")


if __name__ == "__main__":
    main()
