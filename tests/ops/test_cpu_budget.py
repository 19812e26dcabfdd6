"""The CPU budget: the affinity mask, capped by the CPU quota of the process's cgroups.

Each test lays out a cgroup tree as the kernel shows it (cgroup v2: ``cpu.max``; v1:
``cpu/cpu.cfs_quota_us`` and ``cpu/cpu.cfs_period_us``) and the process's
``/proc/self/cgroup`` lines. tests/system/test_process_life.py runs the service in a real
cgroup with a quota where the machine lets it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.ops.cpu_budget import available_cpus, cgroup_cpu_limit

AFFINITY = len(os.sched_getaffinity(0))


def _tree(root: Path, files: dict[str, str], own: str) -> Path:
    for name, text in files.items():
        path = root / "sys" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = root / "proc_self_cgroup"
    proc.write_text(own)
    return proc


@pytest.mark.parametrize(
    ("files", "own", "limit"),
    [
        pytest.param({"cpu.max": "150000 100000\n"}, "0::/\n", 1.5, id="v2-container"),
        pytest.param({"cpu.max": "max 100000\n"}, "0::/\n", None, id="v2-unlimited"),
        pytest.param(
            {"cpu.max": "max 100000\n", "kubepods/pod1/cpu.max": "50000 100000\n"},
            "0::/kubepods/pod1\n",
            0.5,
            id="v2-own-cgroup-below-the-root",
        ),
        pytest.param(
            {"a/cpu.max": "100000 100000\n", "a/b/cpu.max": "300000 100000\n"},
            "0::/a/b\n",
            1.0,
            id="v2-a-parent-limits-more",
        ),
        pytest.param(
            {"cpu.max": "200000 100000\n"},
            "0::/docker/abc\n",  # the path is not visible inside the container's mount
            2.0,
            id="v2-path-outside-the-mount",
        ),
        pytest.param(
            {"cpu/cpu.cfs_quota_us": "250000\n", "cpu/cpu.cfs_period_us": "100000\n"},
            "2:cpuacct:/\n1:cpu:/\n0::/\n",
            2.5,
            id="v1",
        ),
        pytest.param(
            {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
            "4:cpu,cpuacct:/\n",
            None,
            id="v1-unlimited",
        ),
        pytest.param(
            {
                "cpu/cpu.cfs_quota_us": "-1\n",
                "cpu/cpu.cfs_period_us": "100000\n",
                "cpu/job/cpu.cfs_quota_us": "20000\n",
                "cpu/job/cpu.cfs_period_us": "100000\n",
            },
            "5:cpu,cpuacct:/job\n1:memory:/other\n",
            0.2,
            id="v1-own-cgroup",
        ),
        pytest.param({}, "0::/\n", None, id="no-cgroup-files"),
        pytest.param({"cpu.max": "garbage\n"}, "0::/\n", None, id="unreadable-file"),
    ],
)
def test_cgroup_cpu_limit(
    tmp_path: Path, files: dict[str, str], own: str, limit: float | None
) -> None:
    proc = _tree(tmp_path, files, own)
    assert cgroup_cpu_limit(tmp_path / "sys", proc) == limit


def test_no_proc_file_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path, tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("quota", "expected"),
    [
        ("50000 100000", 1),  # half a CPU still runs one update at a time
        ("100000 100000", 1),
        ("150000 100000", min(2, AFFINITY)),  # rounded up
        (f"{100000 * (AFFINITY + 4)} 100000", AFFINITY),  # the affinity is smaller
        ("max 100000", AFFINITY),
    ],
)
def test_available_cpus_is_the_smaller_of_affinity_and_quota(
    tmp_path: Path, quota: str, expected: int
) -> None:
    proc = _tree(tmp_path, {"cpu.max": quota + "\n"}, "0::/\n")
    assert available_cpus(tmp_path / "sys", proc) == expected
