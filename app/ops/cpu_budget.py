"""How many CPUs this process may use: its CPU affinity and its cgroup's CPU quota.

A container limited to 1.5 CPUs (`docker run --cpus 1.5`, a Kubernetes CPU limit) still
sees every CPU of the host in its affinity mask; the limit is a CFS quota of its cgroup,
`cpu.max` in cgroup v2 (``"150000 100000"``: 150 ms of CPU time per 100 ms period) or
`cpu.cfs_quota_us` and `cpu.cfs_period_us` in cgroup v1. The quota of every cgroup from
the process's own up to the root applies, so the smallest one found on the way counts.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_limit"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def available_cpus(
    cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP
) -> int:
    """CPUs this process may run on, capped by its cgroup's CPU quota (rounded up), at least 1."""
    # The affinity mask: a container's CPU set, not the host's count (where there is one).
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cpus = len(affinity) if affinity is not None else os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root, proc_self_cgroup)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(cpus, 1)


def cgroup_cpu_limit(
    cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP
) -> float | None:
    """The CPU quota of this process's cgroups in CPUs (quota / period), or None if unlimited.

    `proc_self_cgroup` lists the process's cgroup in each hierarchy (``0::/path`` for v2,
    ``N:cpu,cpuacct:/path`` for v1's CPU controller), relative to `cgroup_root` (v2) or to
    `cgroup_root`/cpu (v1). Files that are missing or unreadable count as no limit.
    """
    try:
        lines = proc_self_cgroup.read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            for directory in _up_to_root(cgroup_root, path):
                limits.extend(_v2_limit(directory))
        elif "cpu" in controllers.split(","):
            for directory in _up_to_root(cgroup_root / "cpu", path):
                limits.extend(_v1_limit(directory))
    return min(limits, default=None)


def _up_to_root(mount: Path, path: str) -> list[Path]:
    # In a container the cgroup's own directory is usually the mount itself ("/" here);
    # where the path is not visible inside the mount, the mount's own limit still applies.
    parts = [part for part in path.split("/") if part and part != ".."]
    return [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v2_limit(directory: Path) -> list[float]:
    try:
        quota, period = (directory / "cpu.max").read_text(encoding="ascii").split()
    except (OSError, ValueError):
        return []
    if quota == "max":
        return []
    return _ratio(quota, period)


def _v1_limit(directory: Path) -> list[float]:
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text(encoding="ascii").strip()
        period = (directory / "cpu.cfs_period_us").read_text(encoding="ascii").strip()
    except OSError:
        return []
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> list[float]:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return []
    # v1 writes -1 for no quota.
    return [quota_us / period_us] if quota_us > 0 and period_us > 0 else []
