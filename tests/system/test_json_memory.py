"""A JSON body's peak memory, measured in a fresh process (Linux: VmHWM after clear_refs).

Zeros as `0.0` are the shortest float literals orjson writes (4 bytes with their comma),
the worst case for the numbers' share: their float64 arrays alone are 2x the body.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


# The same body of zeros, refused for one value at its very end, or read by msgspec for an
# integer pysimdjson does not parse: each array or row is read into Python floats on its
# own, never the whole body at once (24x the body for `0.0,`).
EDITED = """
import sys
import numpy as np, orjson
from app.errors import ProblemError
from app.wire.json_codec import decode_request

b, n = (100_000, 50) if sys.argv[2] == "short rows" else (64, 78_125)
body = orjson.dumps(
    {"weights": np.zeros(n), "rewards": np.zeros(b), "policy_log_probs": np.zeros(b),
     "ref_log_probs": np.zeros(b), "log_prob_grads": np.zeros((b, n)), "beta": 0.1, "lr": 0.1},
    option=orjson.OPT_SERIALIZE_NUMPY,
)
ending = {"a string": b',"x"]]', "a short row": b"]]", "a big integer": b"," + b"1" * 30 + b"]]"}
end = body.rindex(b"]]")
if sys.argv[1] == "an unknown key":
    body = bytearray(body[:-1] + b',"bogus":1}')
else:
    body = bytearray(body[: body.rindex(b",", 0, end)] + ending[sys.argv[1]] + body[end + 2 :])

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS")
try:
    decode_request(body, None)
    answer = "accepted"
except ProblemError as problem:
    answer = problem.problems[0].msg.split(";")[0].replace(" ", "_")
print(len(body), (status("VmHWM") - before) / len(body), answer)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
@pytest.mark.parametrize(
    ("case", "rows", "answer"),
    [
        ("a string", "long rows", "log_prob_grads[63][78124]_is_a_string_('x')"),
        ("a short row", "long rows", "log_prob_grads[63]_has_78124_entries"),
        ("an unknown key", "long rows", "unknown_field_'bogus'"),
        ("a big integer", "long rows", "accepted"),
        # 100000 rows of 50 numbers: more arrays than the fast paths take.
        ("a string", "short rows", "log_prob_grads[99999][49]_is_a_string_('x')"),
        ("a big integer", "short rows", "accepted"),
    ],
)
def test_a_large_body_the_fast_paths_leave_grows_the_process_by_at_most_3x(
    case: str, rows: str, answer: str
) -> None:
    command = [sys.executable, "-c", EDITED, case, rows]
    out = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    size, growth = int(out[0]), float(out[1])
    assert size > 20_000_000
    assert out[2] == answer
    assert growth <= 3.0
