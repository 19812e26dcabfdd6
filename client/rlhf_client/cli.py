"""The `rlhf-update` command: file-based updates, a health check, and the demo.

Exit codes: 0 ok, 2 usage or unreadable input, 3 rejected by the server (its detail is
printed), 4 connection failure, timeout or 5xx after retries.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx2

from rlhf_client._client import DEFAULT_TIMEOUT, Client
from rlhf_client._errors import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    InternalServerError,
)
from rlhf_client._files import (
    SAMPLE_BATCH,
    BatchFileError,
    check_format,
    parse_option_value,
    read_batch,
    read_state,
    write_batch,
    write_state,
    write_weights,
)
from rlhf_client._models import UpdateStats
from rlhf_client._progress import ProgressTransport
from rlhf_client._version import __version__

__all__ = ["main"]

EXIT_OK, EXIT_USAGE, EXIT_REJECTED, EXIT_UNAVAILABLE = 0, 2, 3, 4
# Uploads from this size on show a progress bar (when tqdm, the [cli] extra, is installed).
PROGRESS_BYTES = 4 << 20

_MAIN_EXAMPLES = """\
examples:
  rlhf-update health
  rlhf-update example --out batch.npz
  rlhf-update --base-url http://127.0.0.1:8000 update --in batch.npz --out new.safetensors \\
      --beta 0.1 --lr 0.01
  rlhf-update demo --in-process

The server is --base-url, else $RLHF_BASE_URL, else http://127.0.0.1:8000; a token in
$RLHF_API_TOKEN is sent as a bearer token. Exit codes: 0 ok, 2 usage, 3 rejected by the
server, 4 connection failure, timeout or server error after retries.
"""

_UPDATE_EXAMPLES = """\
examples:
  rlhf-update update --in batch.npz --out new.npz --beta 0.1 --lr 0.01
  rlhf-update update --in batch.safetensors --out new.safetensors --option baseline=mean
  cat request.json | rlhf-update update --in - --out - --option max_grad_norm=1.0 > new.json
  rlhf-update update --in batch.npz --out new.npz --state-out state.npz \
      --option 'optimizer={"type": "adamw"}'
  rlhf-update update --in batch2.npz --out new2.npz --state-in state.npz --state-out state.npz \
      --option 'optimizer={"type": "adamw"}'

The input holds weights, rewards, policy_log_probs, ref_log_probs and log_prob_grads under
those names (.npz, .safetensors, .json, or - for JSON on stdin), beta and lr as 0-d entries
unless given as flags (flags win), and any algorithm option (group_ids, sequence_lengths as
integer arrays; old_log_probs, behavior_log_probs as float arrays; reward_clip=[-1,2] a pair).
The output holds `weights`; the stats go to stderr as one JSON line. With an optimizer,
--state-out writes its new state (step and moments, as torch names them) and --state-in
reads it back for the next step.
"""

_EXAMPLE_EXAMPLES = """\
examples:
  rlhf-update example --out batch.npz             # also .safetensors, .json, or - (stdout)
  rlhf-update update --in batch.npz --out new.npz

Writes a batch of B = 4 samples and N = 3 weights with beta and lr, in the format of the
path's suffix, ready for `rlhf-update update --in`.
"""

_HEALTH_EXAMPLES = """\
example:
  rlhf-update --base-url http://127.0.0.1:8000 health     # prints {"status": "ok"}
"""

_DEMO_EXAMPLES = """\
examples:
  rlhf-update demo --in-process                      # the service in this process, no port
  rlhf-update --base-url http://127.0.0.1:8000 demo  # a running service
  rlhf-update demo --in-process --steps 40 --seeds 1 --png quick.png --csv quick.csv

Trains a softmax policy on a 64-prompt x 8-response contextual bandit, one /update call per
batch of rollouts, for beta in {0, 0.05, 0.2}, and with a +1 reward offset without and with
the group mean baseline; then beta 0.2 with PPO-clip (4 epochs on each batch) and AdamW;
writes the curves (PNG) and every measurement (CSV).
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except (BatchFileError, ValueError, ImportError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except InternalServerError as exc:
        _error(f"server error: {exc}")
        return EXIT_UNAVAILABLE
    except APIStatusError as exc:
        _error(f"rejected by the server: {exc}")
        for problem in exc.errors[1:]:
            _error(f"  {problem.get('msg', problem)}")
        return EXIT_REJECTED
    except (APIConnectionError, APIResponseError) as exc:
        _error(str(exc))
        return EXIT_UNAVAILABLE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf-update",
        description="Client of the RLHF weight-update service.",
        epilog=_MAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_flags(parser, suppress=False)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    update = _subcommand(
        commands, "update", "apply one update to the weights in a file", _UPDATE_EXAMPLES
    )
    update.add_argument("--in", dest="input", required=True, metavar="PATH", help="input batch")
    update.add_argument("--out", dest="output", required=True, metavar="PATH", help="new weights")
    update.add_argument("--beta", type=float, help="KL coefficient (overrides the file's)")
    update.add_argument("--lr", type=float, help="learning rate (overrides the file's)")
    update.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an algorithm option, e.g. baseline=mean, max_grad_norm=1.0 (repeatable)",
    )
    update.add_argument(
        "--state-in",
        metavar="PATH",
        help="the optimizer state to step from (a previous --state-out); needs an optimizer",
    )
    update.add_argument(
        "--state-out",
        metavar="PATH",
        help="where to write the optimizer's new state (.npz, .safetensors, .json or -)",
    )
    update.add_argument("--request-id", help="send this X-Request-ID")
    update.set_defaults(command=_run_update)

    health = _subcommand(commands, "health", "check that the service is up", _HEALTH_EXAMPLES)
    health.set_defaults(command=_run_health)

    example = _subcommand(
        commands, "example", "write a sample batch to try the update with", _EXAMPLE_EXAMPLES
    )
    example.add_argument(
        "--out", dest="output", required=True, metavar="PATH", help="where to write it"
    )
    example.set_defaults(command=_run_example)

    demo = _subcommand(commands, "demo", "RLHF on a bandit with a known optimum", _DEMO_EXAMPLES)
    demo.add_argument("--steps", type=int, default=200, help="updates per run (default: 200)")
    demo.add_argument("--seeds", type=int, default=3, help="problem instances to average (3)")
    demo.add_argument("--png", type=Path, default=Path("rlhf-demo.png"), help="figure path")
    demo.add_argument("--csv", type=Path, default=Path("rlhf-demo.csv"), help="data path")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(command=_run_demo)
    return parser


def _add_global_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The flags every command takes, before or after its name.

    A subcommand's copy has no defaults (`suppress`): it sets a flag only when given
    there, so one given before the subcommand is kept.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--base-url", default=default(None), help="the service's URL (default: $RLHF_BASE_URL)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=default(None),
        help="seconds per request (default: 60 read, 5 connect)",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=default(2),
        help="retries of retryable failures (default: 2)",
    )
    parser.add_argument(
        "--transport",
        choices=("auto", "json", "safetensors"),
        default=default("auto"),
        help="wire format (default: safetensors for large batches when installed)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        default=default(False),
        help="run the service in this process, with no port (needs the service installed)",
    )


def _subcommand(commands: Any, name: str, summary: str, examples: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_flags(parser, suppress=True)
    return parser


@contextmanager
def _client(args: argparse.Namespace) -> Iterator[Client]:
    settings: dict[str, Any] = {
        "timeout": args.timeout,
        "max_retries": args.max_retries,
        "transport": args.transport,
    }
    if not args.in_process:
        with (
            _http_client(args) as http,
            Client(args.base_url, http_client=http, **settings) as client,
        ):
            yield client
        return
    try:
        from rlhf_update_server.main import create_app
        from starlette.testclient import TestClient
    except ImportError as exc:
        msg = (
            "--in-process needs the service installed beside the client "
            f"(pip install <the service's repository>; {exc})"
        )
        raise ImportError(msg) from None
    with TestClient(create_app()) as http, Client(http_client=http, **settings) as client:
        yield client


def _http_client(args: argparse.Namespace) -> httpx2.Client:
    """The HTTP client of the commands: a progress bar on uploads of PROGRESS_BYTES or more."""
    transport: httpx2.BaseTransport = httpx2.HTTPTransport()
    if _has_tqdm():
        transport = ProgressTransport(transport, PROGRESS_BYTES)
    return httpx2.Client(timeout=DEFAULT_TIMEOUT, transport=transport)


def _has_tqdm() -> bool:
    return importlib.util.find_spec("tqdm") is not None


def _run_example(args: argparse.Namespace) -> int:
    write_batch(args.output, SAMPLE_BATCH)
    if args.output != "-":
        print(f"wrote {args.output}: B = 4 samples, N = 3 weights, beta and lr", file=sys.stderr)
    return EXIT_OK


def _run_update(args: argparse.Namespace) -> int:
    check_format(args.output)  # before reading, uploading and computing
    if args.state_out is not None:
        check_format(args.state_out)
    if args.state_out == "-" and args.output == "-":
        msg = "--out and --state-out cannot both be - (stdout); write one of them to a file"
        raise ValueError(msg)
    batch = read_batch(args.input)
    beta = args.beta if args.beta is not None else batch.beta
    lr = args.lr if args.lr is not None else batch.lr
    if beta is None or lr is None:
        name = "beta" if beta is None else "lr"
        msg = f"{name} is missing: give --{name} or store it in {args.input}"
        raise ValueError(msg)
    options = dict(batch.options)
    for item in args.option:
        name, sep, value = item.partition("=")
        if not sep or not name:
            msg = f"--option {item!r}: expected NAME=VALUE"
            raise ValueError(msg)
        options[name.strip()] = parse_option_value(value)
    if args.state_in is not None:
        options["optimizer_state"] = read_state(args.state_in)
    if (args.state_in or args.state_out) and options.get("optimizer") is None:
        msg = (
            "--state-in and --state-out need an optimizer: give "
            """--option 'optimizer={"type": "adamw"}' or store it in the input"""
        )
        raise ValueError(msg)
    with _client(args) as client:
        result = client.update(
            *batch.arrays.values(), beta=beta, lr=lr, request_id=args.request_id, **options
        )
    write_weights(args.output, result.weights)
    if args.state_out is not None and result.optimizer_state is not None:
        write_state(args.state_out, result.optimizer_state)
    print(json.dumps(_stats_dict(result.stats)), file=sys.stderr)
    return EXIT_OK


def _run_health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(json.dumps(client.health()))
    return EXIT_OK


def _run_demo(args: argparse.Namespace) -> int:
    from rlhf_client.demo.report import plot, summarize, write_csv
    from rlhf_client.demo.run import DEFAULT_RUNS, run_demo

    if args.steps < 1 or args.seeds < 1:
        msg = "--steps and --seeds must be at least 1"
        raise ValueError(msg)
    if importlib.util.find_spec("matplotlib") is None:  # before minutes of training
        msg = "the demo draws its figure with matplotlib: pip install 'rlhf-update-client[demo]'"
        raise ImportError(msg)
    total = args.steps * args.seeds * len(DEFAULT_RUNS)
    started = time.perf_counter()
    with _client(args) as client, _progress(total, args) as tick:
        records = run_demo(client, steps=args.steps, seeds=range(args.seeds), on_step=tick)
    write_csv(records, args.csv)
    plot(records, args.png)
    elapsed = time.perf_counter() - started
    # The PPO run makes several updates per batch of rollouts: count the calls made.
    calls = {(r.seed, r.config): r.updates for r in records}
    print(summarize(records))
    print(f"wrote {args.png} and {args.csv} in {elapsed:.1f} s ({sum(calls.values())} updates)")
    return EXIT_OK


@contextmanager
def _progress(total: int, args: argparse.Namespace) -> Iterator[Callable[[], None]]:
    """A tqdm bar on stderr when tqdm (the `[cli]` extra) is installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        yield lambda: None
        return
    with tqdm(total=total, unit="batch", disable=args.no_progress, file=sys.stderr) as bar:

        def tick() -> None:
            bar.update(1)

        yield tick


def _stats_dict(stats: UpdateStats) -> dict[str, Any]:
    known = {k: v for k, v in asdict(stats).items() if k != "extra" and v is not None}
    return {**known, **stats.extra}


def _error(message: str) -> None:
    print(f"rlhf-update: {message}", file=sys.stderr)
