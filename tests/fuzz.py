"""Mutation fuzzing of every reader: prototxt text and caffemodel bytes.

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
    except Proto2TorchError:
        return "refused"


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
    except Proto2TorchError:
        return "refused"
    try:
        with_weights(net, model)
        return "loaded"
    except Proto2TorchError:
        return "refused (weights do not fit)"


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
        tally.add(check())
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


def fuzz(
    prototxt_cases: int, caffemodel_cases: int, seed: int, deadline: float | None = None, hang_seconds: float = 30.0
) -> tuple[Tally, Tally]:
    """Run the mutations (until both counts are reached, or until ``deadline`` when given)."""
    rng = random.Random(seed)
    texts = seeds_prototxt()
    text_tally, bytes_tally = Tally(), Tally()
    with tempfile.TemporaryDirectory(prefix="proto2torch-fuzz-") as tmp:
        models = seeds_caffemodel(Path(tmp))
        for kind in _schedule(rng, prototxt_cases, caffemodel_cases, deadline):
            if kind == "prototxt":
                name, text = rng.choice(texts)
                mutated = mutate_text(rng, text)
                run_case(text_tally, name, lambda mutated=mutated: check_prototxt(mutated), mutated.encode("utf-8", "surrogatepass"), hang_seconds)
            else:
                name, data, net = rng.choice(models)
                mutated_bytes = mutate_bytes(rng, data)
                run_case(bytes_tally, name, lambda mutated_bytes=mutated_bytes, net=net: check_caffemodel(mutated_bytes, net), mutated_bytes, hang_seconds)
    return text_tally, bytes_tally


def _schedule(rng: random.Random, texts: int, models: int, deadline: float | None) -> Iterator[str]:
    """The kinds of case to run, interleaved in proportion to their targets, until every target
    is reached (and the deadline, if any, has passed)."""
    target = {"prototxt": texts, "caffemodel": models}
    if not any(target.values()):
        target = {"prototxt": 5, "caffemodel": 1}
    done = dict.fromkeys(target, 0)
    while not (all(done[k] >= target[k] for k in done) and (deadline is None or time.monotonic() > deadline)):
        kind = min(done, key=lambda k: done[k] / target[k] if target[k] else math.inf)
        done[kind] += 1
        yield kind


def report(text_tally: Tally, bytes_tally: Tally) -> str:
    lines = []
    for what, tally in (("prototxt", text_tally), ("caffemodel", bytes_tally)):
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(tally.counts.items()))
        lines.append(f"{what}: {tally.total} mutated inputs ({outcomes}); slowest case {tally.slowest:.2f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="run at least this long (and at least the counts below)")
    parser.add_argument("--prototxt", type=int, default=10_000, help="mutated prototxt inputs (at least)")
    parser.add_argument("--caffemodel", type=int, default=2_000, help="mutated caffemodel inputs (at least)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"))
    args = parser.parse_args(argv)
    deadline = time.monotonic() + 60 * args.minutes if args.minutes else None
    print(f"seed {args.seed}", flush=True)
    text_tally, bytes_tally = fuzz(args.prototxt, args.caffemodel, args.seed, deadline, args.hang_seconds)
    print(report(text_tally, bytes_tally))
    failures = text_tally.failures + bytes_tally.failures
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
