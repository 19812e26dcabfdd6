"""A JSON body's peak memory, measured in a fresh process (Linux: VmHWM after clear_refs).

Zeros as `0.0` are the shortest float literals orjson writes (4 bytes with their comma),
the worst case for the numbers' share: their float64 arrays alone are 2x the body.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.json_memory import SCRIPT as MEASURE

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
import numpy as np, orjson
from app.errors import TooManyElementsError
from app.wire.json_codec import decode_request

b, n = 64, 78_125
body = bytearray(orjson.dumps(
    {"weights": np.zeros(n), "rewards": np.zeros(b), "policy_log_probs": np.zeros(b),
     "ref_log_probs": np.zeros(b), "log_prob_grads": np.zeros((b, n)), "beta": 0.1, "lr": 0.1},
    option=orjson.OPT_SERIALIZE_NUMPY,
))

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

def growth(decode):
    open("/proc/self/clear_refs", "w").write("5")
    before = status("VmRSS")
    result = decode()
    return (status("VmHWM") - before) / len(body), result

def refused():
    try:
        decode_request(body, 1000)
    except TooManyElementsError:
        return "refused"
    return "accepted"

limited, outcome = growth(refused)
whole, payload = growth(lambda: decode_request(body, None))
print(len(body), limited, outcome, whole, payload.log_prob_grads.shape)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_a_json_body_of_zeros_grows_the_process_by_at_most_3x_and_over_the_limit_by_little() -> (
    None
):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    size, limited, outcome, whole = int(out[0]), float(out[1]), out[2], float(out[3])
    assert size > 20_000_000
    assert outcome == "refused"
    # Over RLHF_MAX_ELEMENTS: refused from the structure; the matrix is never built (its
    # float64 values would be 2x the body).
    assert limited < 0.25
    assert whole <= 3.0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
@pytest.mark.parametrize(
    ("b", "n", "case", "answer"),
    [
        (64, 78_125, "a string", "log_prob_grads[63][78124] is a string ('x')"),
        (64, 78_125, "a short row", "log_prob_grads[63] has 78124 entries"),
        (64, 78_125, "an unknown key", "unknown field 'bogus'"),
        (64, 78_125, "a big integer", ""),
        # 100000 rows of 50 numbers: more arrays than the fast paths take.
        (100_000, 50, "a string", "log_prob_grads[99999][49] is a string ('x')"),
        (100_000, 50, "a big integer", ""),
        # One sample of 3 M weights: its row and its weights read a piece at a time.
        (1, 3_000_000, "a string", "log_prob_grads[0][2999999] is a string ('x')"),
        (1, 3_000_000, "a big integer", ""),
        (1, 3_000_000, "an unknown key", "unknown field 'bogus'"),
        # A million rows of 4 numbers: read a piece of rows at a time, no object per row.
        (1_000_000, 4, "a string", "log_prob_grads[999999][3] is a string ('x')"),
        (1_000_000, 4, "a short row", "log_prob_grads[999999] has 3 entries"),
    ],
)
def test_a_large_body_the_fast_paths_leave_grows_the_process_by_at_most_3x(
    b: int, n: int, case: str, answer: str
) -> None:
    # A body of zeros refused for one value at its very end, or read by msgspec for an
    # integer pysimdjson does not parse: each array or row is read into Python floats on
    # its own, a piece of 1 MiB of text at a time, never the whole body at once (10x the
    # body and more for `0.0,`).
    command = [sys.executable, "-c", MEASURE, str(b), str(n), case]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    size, growth, outcome, *message = out.stdout.split(maxsplit=3)
    assert int(size) > 20_000_000
    assert (outcome == "accepted") == (answer == "")
    assert " ".join(message).startswith(answer)
    assert float(growth) <= 3.0
