"""Start-up: ``proto2torch inspect`` of ResNet-152's deploy file in a cold process.

    python benchmarks/startup.py [--repeat 7]

Each run is a fresh interpreter, as a shell user's is.  Two states of Python's bytecode
cache are measured: cached (an installed package; a private ``PYTHONPYCACHEPREFIX`` is
warmed first) and not cached (``PYTHONDONTWRITEBYTECODE``, every module compiled anew).
The baselines, in the same run: an interpreter that does nothing, and one that only
imports torch, which ``inspect`` no longer does (``tests/test_startup.py``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from _common import RESNET152, ROOT, bytecode_env, table


def wall(argv: list[str], env: dict[str, str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    cached, uncached = bytecode_env(cached=True), bytecode_env(cached=False)
    inspect = [sys.executable, "-m", "proto2torch", "inspect", str(RESNET152)]
    subprocess.run(inspect, env=cached, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # writes the cache
    subprocess.run([sys.executable, "-c", "import torch"], env=cached, cwd=ROOT, check=True)
    rows = [("cold process", "bytecode cached", "not cached")]
    for label, argv in (
        ("python -c pass (baseline)", [sys.executable, "-c", "pass"]),
        ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
        ("proto2torch inspect ResNet-152-deploy.prototxt", inspect),
    ):
        rows.append((label, *(f"{wall(argv, env, args.repeat):.3f} s" for env in (cached, uncached))))
    print(f"median wall time of {args.repeat} fresh processes each")
    print(table(rows))


if __name__ == "__main__":
    main()
