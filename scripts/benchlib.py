"""Helpers of the benchmark scripts (scripts/bench*.py): the machine line of a report, and the one writer of
a script's marked section of docs/benchmarks.md. Imported by the scripts, which put scripts/ on sys.path.
"""

from __future__ import annotations

import torch


def machine_description() -> str:
    """One line naming this machine for benchmark reports: CPU model, torch threads, GPU, torch and Python."""
    import platform
    from pathlib import Path

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {torch.get_num_threads()} threads, {dev}; torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def write_marked_section(path, section: str, begin: str, end: str) -> None:
    """Put ``section`` (which starts with ``begin`` and ends with ``end``) into the text file ``path``: in
    place of the first ``begin`` … ``end`` block there, or appended after a blank line. The rest of the file
    is kept as it is (benchmark scripts each own one block of docs/benchmarks.md)."""
    import re
    from pathlib import Path

    path = Path(path)
    text = path.read_text() if path.exists() else ""
    section = section.strip("\n")
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), flags=re.S)
    if pat.search(text):
        text = pat.sub(lambda _: section, text, count=1)
    else:
        text = (
            text
            + ("\n" if text and not text.endswith("\n") else "")
            + ("\n" if text else "")
            + section
            + "\n"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
