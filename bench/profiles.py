"""Reading py-spy's raw profiles of the broker: where the event-loop thread spends its time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["profile_md", "self_time"]


def self_time(path: Path) -> dict[str, Any]:
    """Samples per thread; self and total samples per function of the event-loop thread."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    by_area: dict[str, int] = {}
    threads: dict[str, int] = {}
    samples = main = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        head, _, rest = stack.partition(": ")
        name, _, frames_text = rest.partition(";") if head.startswith("thread (") else \
            ("?", "", stack)
        thread = re.sub(r"_\d+$", "", name)  # ThreadPoolExecutor-0_0 -> ThreadPoolExecutor-0
        threads[thread] = threads.get(thread, 0) + count
        if name != "MainThread":
            continue
        main += count
        frames = [f for f in frames_text.split(";") if f]
        if not frames:
            continue
        leaf = _frame(frames[-1])
        own[leaf] = own.get(leaf, 0) + count
        for f in set(map(_frame, frames)):
            total[f] = total.get(f, 0) + count
        area = _area(frames[-1])
        by_area[area] = by_area.get(area, 0) + count
    return {"samples": samples, "main": main,
            "threads": sorted(threads.items(), key=lambda kv: -kv[1]),
            "self": sorted(own.items(), key=lambda kv: -kv[1])[:25],
            "total": sorted(((k, v) for k, v in total.items() if _ours(k)),
                            key=lambda kv: -kv[1])[:25],
            "areas": sorted(by_area.items(), key=lambda kv: -kv[1])[:15]}


def _frame(frame: str) -> str:
    """``func (path/to/file.py:123)`` → ``func (file.py)``, shortening site-packages paths."""
    m = re.match(r"^(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    path = re.sub(r"^.*/site-packages/", "", path)
    path = re.sub(r"^.*/lib/python3\.\d+/", "stdlib/", path)
    path = re.sub(r"^.*/work/main/", "", path)
    return f"{func} ({path})"


def _area(frame: str) -> str:
    m = re.match(r"^.*? \((.*?)(?::\d+)?\)$", frame)
    path = m.group(1) if m else frame
    if "/site-packages/" in path:
        return path.split("/site-packages/")[1].split("/")[0]
    if re.search(r"/lib/python3\.\d+/", path):
        return "stdlib:" + re.split(r"/lib/python3\.\d+/", path)[1].split("/")[0]
    path = re.sub(r"^.*/work/main/", "", path)
    return path


def _ours(frame: str) -> bool:
    return any(f"({p}/" in frame for p in ("broker", "schemas", "producer_adapter"))


def profile_md(p: dict[str, Any]) -> list[str]:
    if "error" in p:
        return [f"py-spy could not profile the broker: `{p['error']}`", ""]
    n = p["samples"] or 1
    m = p["main"] or 1
    out = [(f"py-spy `record --nonblocking --threads --rate 250` on the broker process while "
            f"it served {p['answers_per_s']:.1f} answers/s (fewer than unprofiled: py-spy itself "
            f"takes CPU on this 2-core machine). {p['samples']} non-idle samples; by thread "
            "(a sample inside a C call counts as busy, waiting included: the access log's "
            "thread mostly waits on SQLite and the disk, and its CPU time is the CPU table's "
            "whole process less its event-loop thread):"), "",
           "| % of samples | thread |", "|---:|---|"]
    out += [f"| {100 * c / n:.1f} | {t} |" for t, c in p["threads"]]
    out += ["", ("The event-loop thread (MainThread), which bounds throughput — top functions "
                 "by self time:"), "", "| % of main-thread samples | function |", "|---:|---|"]
    out += [f"| {100 * c / m:.1f} | `{f}` |" for f, c in p["self"][:20]]
    out += ["", "Main-thread self time by package / module:", "", "| % | where |", "|---:|---|"]
    out += [f"| {100 * c / m:.1f} | `{f}` |" for f, c in p["areas"]]
    out += ["", "Main-thread inclusive time of the project's own functions:", "",
            "| % total | function |", "|---:|---|"]
    out += [f"| {100 * c / m:.1f} | `{f}` |" for f, c in p["total"][:15]]
    return [*out, ""]
