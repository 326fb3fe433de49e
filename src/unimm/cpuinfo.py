"""Fields of ``/proc/cpuinfo``, for the code and benches that choose or record by CPU."""

from pathlib import Path


def cpuinfo(*keys: str, path: Path = Path("/proc/cpuinfo")) -> str:
    """The value (stripped) of the first line of ``/proc/cpuinfo`` whose key is one of ``keys``; "" where there is
    no such line or no such file (not Linux)."""
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in keys:
                return value.strip()
    except OSError:
        pass
    return ""
