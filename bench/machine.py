"""Facts about the machine a benchmark ran on, shared by the bench scripts."""

import platform

from unimm.cpuinfo import cpuinfo


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what ``platform`` knows)."""
    return cpuinfo("model name") or platform.processor() or "unknown"
