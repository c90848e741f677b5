"""Mutation fuzzing of every reader: prototxt, DSL and solver text; caffemodel, solverstate, binaryproto and Datum bytes.

    python -m tests.fuzz --minutes 10            # a long run (prints the counts)
    python -m tests.fuzz --prototxt 500 --caffemodel 200 --seed 1

Inputs are mutations of the real files in ``tests/data``: the corpus prototxt files and
the caffemodels of the conformance cases (made from their recipes).  Text mutations
truncate, delete, duplicate or swap spans and lines, insert protobuf tokens and bytes,
and replace numbers with zero, negative, huge and non-numeric values; byte mutations
truncate, flip bits, overwrite varints with huge lengths, insert, duplicate and zero
ranges.  Each mutated net that still loads is also given filler weights and built into
a torch module when it is small.

A case passes when it loads or raises a :class:`~proto2torch.errors.Proto2TorchError`
within the time limit.  Anything else — another exception (a traceback), or a case
running longer than ``--hang-seconds`` — is a failure: its input is saved under
``--out`` and the run exits 1.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from proto2torch.errors import Proto2TorchError

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "corpus" / "prototxt"
CASES = DATA / "conformance"

TOKENS = [
    "{", "}", "}}", ":", '"', "'", "layer {", "layers {", "bottom: \"data\"", "top: \"x\"", "name: \"n\"", "type: \"Convolution\"",
    "type: CONVOLUTION", "num_output: 0", "kernel_size: 999999", "pad: -1", "stride: 0", "dim: 0", "dim: -3", "dim: 4294967296",
    "input: \"data\"", "input_dim: 1", "include { phase: TRAIN }", "#", "\n", "\\", "\\x00", "\x00", "\u00e9", "1e309", "nan", "-inf",
    "0x7fffffffffffffff", "${X}", "[", "]", ",", ";", "<", ">", "true", "FALSE", "MAX", "axis: 99", "group: 7",
]  # fmt: skip
BIG_NUMBERS = ["0", "-1", "-2147483649", "4294967297", "99999999999999999999", "1e38", "1e-45", "0.5", "nan", "inf", "x", '""']


def mutate_text(rng: random.Random, text: str) -> str:
    """One to three random edits of ``text``."""
    for _ in range(rng.randint(1, 3)):
        n = len(text)
        kind = rng.randrange(9)
        i, j = sorted((rng.randrange(n + 1), rng.randrange(n + 1)))
        if kind == 0:
            text = text[: rng.randrange(n + 1)]
        elif kind == 1:
            text = text[:i] + text[j : j + rng.randint(0, 200)] + text[j:] if n else text
        elif kind == 2:
            text = text[:i] + text[j:]
        elif kind == 3:
            text = text[:i] + rng.choice(TOKENS) + text[i:]
        elif kind == 4:
            numbers = list(re.finditer(r"-?\d+(\.\d+)?", text))
            if numbers:
                m = rng.choice(numbers)
                text = text[: m.start()] + rng.choice(BIG_NUMBERS) + text[m.end() :]
        elif kind == 5:
            lines = text.split("\n")
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
        elif kind == 6:
            braces = [m.start() for m in re.finditer(r"[{}]", text)]
            if braces:
                k = rng.choice(braces)
                text = text[:k] + text[k + 1 :]
        elif kind == 7:
            text = text[:i] + chr(rng.choice([0, 1, 7, 0x7F, 0xFFFD, 0x1F600, rng.randrange(32, 0x3000)])) + text[i:]
        else:  # nest deeply
            depth = rng.choice([10, 100, 1000])
            text = text[:i] + "a { " * depth + "}" * depth + text[i:]
    return text


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """One to three random edits of a binary file."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        n = len(buf)
        if n == 0:
            buf += bytes(rng.randrange(256) for _ in range(8))
            continue
        kind = rng.randrange(7)
        i = rng.randrange(n)
        if kind == 0:
            del buf[rng.randrange(n) :]
        elif kind == 1:
            for _ in range(rng.randint(1, 8)):
                k = rng.randrange(n)
                buf[k] ^= 1 << rng.randrange(8)
        elif kind == 2:  # a varint claiming an enormous length
            buf[i : i + 1] = bytes([0xFF] * rng.randint(1, 9) + [rng.randrange(1, 0x80)])
        elif kind == 3:
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == 4:
            j = rng.randrange(n)
            buf[i:i] = buf[j : j + rng.randint(1, 4096)]
        elif kind == 5:
            buf[i : i + rng.randint(1, 64)] = bytes(rng.randint(1, 64))
        else:  # change a key's wire type
            buf[i] = (buf[i] & 0xF8) | rng.randrange(8)
    return bytes(buf)


def _v(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _v(number << 3 | 2) + _v(len(payload)) + payload


def structured_lie(rng: random.Random, data: bytes) -> bytes:
    """A well-formed caffemodel that lies: shapes over short payloads, negative dims, odd packed lengths, V1 and V2
    mixed, a layer repeated 10^5 times."""
    kind = rng.randrange(5)
    head = _len_field(1, b"fuzz") + _len_field(2, b"Convolution")
    if kind == 0:  # a blob claiming 10^12 elements over 8 bytes
        blob = _len_field(7, _len_field(1, _v(10**6) + _v(10**6))) + _len_field(5, b"\0" * 8)
        return data + _len_field(100, head + _len_field(7, blob))
    if kind == 1:  # a negative dimension, as a 10-byte varint
        blob = _len_field(7, _len_field(1, _v(-1) + _v(4))) + _len_field(5, b"\0" * 16)
        return data + _len_field(100, head + _len_field(7, blob))
    if kind == 2:  # packed floats whose length is not a multiple of 4
        blob = _len_field(7, _len_field(1, _v(2))) + _len_field(5, b"\0" * 9)
        return data + _len_field(100, head + _len_field(7, blob))
    if kind == 3:  # a V1 'layers' entry in a V2 file
        return data + _len_field(2, _len_field(4, b"old") + _v(5 << 3) + _v(4))
    return data + _len_field(100, head) * 100_000  # one small layer, 10^5 times


class Hang(Exception):
    pass


def _alarm(signum, frame):  # noqa: ANN001, ANN202
    raise Hang()


def check_prototxt(text: str) -> str:
    """'loaded', 'built' or 'refused'; raises on anything that is not a Proto2TorchError."""
    from proto2torch.api import with_weights
    from proto2torch.backend.live import build_graph_module
    from proto2torch.prototxt.lower import net_from_text
    from proto2torch.summary import summary_table

    try:
        net = net_from_text(text, "<fuzz>")
        summary_table(net)
        if net.unsupported() or any(net.values[v].shape is None for v in net.inputs):
            return "loaded"
        if sum(math.prod(s) for n in net.nodes for s in _blob_shapes(net, n)) > 2_000_000:
            return "loaded"
        build_graph_module(with_weights(net, None))
        return "built"
    except Proto2TorchError as exc:
        return _refused(exc)


def _refused(exc: Proto2TorchError, outcome: str = "refused") -> str:
    """A typed refusal, unless it stands for Python running out of memory (which fuzzing must see)."""
    if "(MemoryError)" in str(exc):
        raise MemoryError(str(exc))
    return outcome


def _blob_shapes(net, node) -> list[tuple[int, ...]]:  # noqa: ANN001
    from proto2torch.ir.weights import expected_blob_shapes

    try:
        return expected_blob_shapes(net, node) or []
    except Proto2TorchError:
        return []


def check_caffemodel(data: bytes, net) -> str:  # noqa: ANN001
    from proto2torch.api import with_weights
    from proto2torch.caffemodel.reader import read_caffemodel_bytes

    try:
        model = read_caffemodel_bytes(data, "<fuzz>.caffemodel")
    except Proto2TorchError as exc:
        return _refused(exc)
    try:
        with_weights(net, model)
        return "loaded"
    except Proto2TorchError as exc:
        return _refused(exc, "refused (weights do not fit)")


def check_text(kind: str, text: str) -> str:
    """A mutated DSL or solver file: 'loaded' or 'refused'."""
    try:
        if kind == "dsl":
            from proto2torch.dsl import net_from_dsl
            from proto2torch.summary import summary_table

            summary_table(net_from_dsl(text, "<fuzz>.py", inputs={"data": (1, 3, 227, 227)}))
        else:
            from proto2torch.train.solver import solver_from_text

            solver_from_text(text, "<fuzz>.prototxt", CASES / "train_solver_adam")
        return "loaded"
    except Proto2TorchError as exc:
        return _refused(exc)


def check_binary(kind: str, data: bytes, tmp: Path) -> str:
    """A mutated solverstate, binaryproto or Datum: 'loaded' or 'refused'."""
    from proto2torch.caffemodel.reader import read_blobproto, read_solverstate
    from proto2torch.data.datum import parse_datum

    try:
        if kind == "datum":
            parse_datum(data, "<fuzz> record")
        else:
            path = tmp / f"fuzz.{kind}"
            path.write_bytes(data)
            (read_solverstate if kind == "solverstate" else read_blobproto)(path)
        return "loaded"
    except Proto2TorchError as exc:
        return _refused(exc)


def seeds_other(tmp: Path) -> dict[str, list[tuple[str, object]]]:
    """Seeds of the other families: DSL files, solver files, a solverstate, a mean file, Datums."""
    import numpy as np

    from proto2torch.caffemodel.writer import write_solverstate
    from proto2torch.data.datum import datum_bytes, write_mean

    dsl = [(p.name, p.read_text(errors="replace")) for p in sorted((DATA / "dsl").glob("*.py"))]
    solvers = [(p.parent.name, p.read_text()) for p in sorted(CASES.glob("train_*/solver.prototxt"))]
    write_solverstate(tmp / "s.solverstate", 3, "x.caffemodel", [np.ones((4, 3), np.float32), np.zeros(5, np.float32)], 1)
    write_mean(tmp / "m.binaryproto", np.ones((3, 4, 5), np.float32))
    image = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    return {
        "dsl": dsl,
        "solver": solvers,
        "solverstate": [("solverstate", (tmp / "s.solverstate").read_bytes())],
        "binaryproto": [("mean", (tmp / "m.binaryproto").read_bytes())],
        "datum": [("raw", datum_bytes(image, 3)), ("float", datum_bytes(image.astype(np.float32), 1)), ("encoded", datum_bytes(b"\x89PNG....", 2, encoded=True))],
    }


@dataclass
class Tally:
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str, bytes]] = field(default_factory=list)
    slowest: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1


def run_case(tally: Tally, what: str, check: Callable[[], str], payload: bytes, hang_seconds: float) -> None:
    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, hang_seconds)
    try:
        outcome = check()
        tally.add(outcome)
    except Proto2TorchError as exc:  # (a check that lets one through)
        tally.add("refused")
        exc_text = str(exc)
        if "(MemoryError)" in exc_text:
            tally.counts["refused"] -= 1
            tally.add("OUT-OF-MEMORY")
            tally.failures.append((what, exc_text, payload))
    except MemoryError:
        tally.add("OUT-OF-MEMORY")
        tally.failures.append((what, traceback.format_exc(), payload))
    except Hang:
        tally.add("HANG")
        tally.failures.append((what, f"no result after {hang_seconds} s", payload))
    except Exception:  # the point of fuzzing: anything that is not a Proto2TorchError is a failure
        tally.add("TRACEBACK")
        tally.failures.append((what, traceback.format_exc(), payload))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    tally.slowest = max(tally.slowest, time.perf_counter() - start)


def seeds_prototxt() -> list[tuple[str, str]]:
    return [(str(p.relative_to(CORPUS)), p.read_text(errors="replace")) for p in sorted(CORPUS.rglob("*")) if p.is_file()]


def seeds_caffemodel(workdir: Path) -> list[tuple[str, bytes, object]]:
    """The caffemodels of the conformance cases up to 2 MB (written from their recipes), with their nets."""
    from proto2torch.api import load_net
    from proto2torch.conformance import Case

    out = []
    for folder in sorted(CASES.iterdir()):
        if not (folder / "meta.json").exists():
            continue
        case = Case.load(folder)
        if case.meta.get("params", 0) > 500_000:
            continue
        path = case.write_caffemodel(workdir / f"{case.name}.caffemodel")
        net = load_net(case.prototxt, {k: v.shape for k, v in case.inputs().items()}, options=case.semantics)
        out.append((case.name, path.read_bytes(), net))
    return out


FAMILIES = ("prototxt", "caffemodel", "dsl", "solver", "solverstate", "binaryproto", "datum")


def fuzz(
    prototxt_cases: int, caffemodel_cases: int, seed: int, deadline: float | None = None, hang_seconds: float = 30.0
) -> tuple[Tally, Tally]:
    """Run the prototxt and caffemodel mutations (until both counts are reached, or until ``deadline`` when given)."""
    tallies = fuzz_all({"prototxt": prototxt_cases, "caffemodel": caffemodel_cases}, seed, deadline, hang_seconds)
    return tallies["prototxt"], tallies["caffemodel"]


def fuzz_all(targets: dict[str, int], seed: int, deadline: float | None = None, hang_seconds: float = 30.0) -> dict[str, Tally]:
    """Mutations of every family in ``targets`` (family → count), interleaved."""
    rng = random.Random(seed)
    tallies = {family: Tally() for family in targets}
    with tempfile.TemporaryDirectory(prefix="proto2torch-fuzz-") as tmp:
        work = Path(tmp)
        texts = seeds_prototxt() if targets.get("prototxt") else []
        models = seeds_caffemodel(work) if targets.get("caffemodel") else []
        others = seeds_other(work)
        for kind in _schedule(rng, targets, deadline):
            tally = tallies[kind]
            if kind == "prototxt":
                name, text = rng.choice(texts)
                mutated = mutate_text(rng, text)
                run_case(tally, name, lambda mutated=mutated: check_prototxt(mutated), mutated.encode("utf-8", "surrogatepass"), hang_seconds)
            elif kind == "caffemodel":
                name, data, net = rng.choice(models)
                lie = rng.random() < 0.2
                mutated_bytes = structured_lie(rng, data) if lie else mutate_bytes(rng, data)
                run_case(tally, name, lambda mutated_bytes=mutated_bytes, net=net: check_caffemodel(mutated_bytes, net), mutated_bytes, hang_seconds)
            elif kind in ("dsl", "solver"):
                name, text = rng.choice(others[kind])
                mutated = mutate_text(rng, text)  # type: ignore[arg-type]
                run_case(tally, name, lambda kind=kind, mutated=mutated: check_text(kind, mutated), mutated.encode("utf-8", "surrogatepass"), hang_seconds)
            else:
                name, data = rng.choice(others[kind])
                mutated_bytes = mutate_bytes(rng, data)  # type: ignore[arg-type]
                run_case(tally, name, lambda kind=kind, b=mutated_bytes: check_binary(kind, b, work), mutated_bytes, hang_seconds)
    return tallies


def _schedule(rng: random.Random, targets: dict[str, int], deadline: float | None) -> Iterator[str]:
    """The kinds of case to run, interleaved in proportion to their targets, until every target
    is reached (and the deadline, if any, has passed)."""
    target = dict(targets) if any(targets.values()) else {"prototxt": 5, "caffemodel": 1}
    done = dict.fromkeys(target, 0)
    while not (all(done[k] >= target[k] for k in done) and (deadline is None or time.monotonic() > deadline)):
        kind = min(done, key=lambda k: done[k] / target[k] if target[k] else math.inf)
        done[kind] += 1
        yield kind


def report(tallies: dict[str, Tally]) -> str:
    lines = []
    for what, tally in tallies.items():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(tally.counts.items()))
        lines.append(f"{what}: {tally.total} mutated inputs ({outcomes}); slowest case {tally.slowest:.2f} s")
    return "\n".join(lines)


def peak_memory_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="run at least this long (and at least the counts below)")
    parser.add_argument("--prototxt", type=int, default=10_000, help="mutated prototxt inputs (at least)")
    parser.add_argument("--caffemodel", type=int, default=2_000, help="mutated caffemodel inputs (at least)")
    for family in FAMILIES[2:]:
        parser.add_argument(f"--{family}", type=int, default=500, help=f"mutated {family} inputs (at least)")
    parser.add_argument("--memory-gib", type=float, default=4.0, help="address-space limit (resource.setrlimit): an unbounded allocation fails")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"))
    args = parser.parse_args(argv)
    deadline = time.monotonic() + 60 * args.minutes if args.minutes else None
    import resource

    import torch  # noqa: F401  (imported before the limit: its libraries map much address space once)

    limit = int(args.memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    print(f"seed {args.seed}, address space limited to {args.memory_gib:g} GiB", flush=True)
    targets = {family: getattr(args, family) for family in FAMILIES}
    tallies = fuzz_all(targets, args.seed, deadline, args.hang_seconds)
    print(report(tallies))
    print(f"peak resident memory {peak_memory_mib():.0f} MiB")
    failures = [f for tally in tallies.values() for f in tally.failures]
    if failures:
        args.out.mkdir(parents=True, exist_ok=True)
        for i, (what, why, payload) in enumerate(failures):
            (args.out / f"{i:04d}.input").write_bytes(payload)
            (args.out / f"{i:04d}.txt").write_text(f"mutated from {what}\n\n{why}")
        print(f"{len(failures)} failure(s); inputs and tracebacks in {args.out}/", file=sys.stderr)
        print(failures[0][1], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
