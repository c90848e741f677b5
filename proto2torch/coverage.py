"""What proto2torch supports: the layer table (from the registry) and a corpus report.

Both are generated, never kept by hand: ``python tools/update_readme.py`` writes them
into the README between ``<!-- name:begin -->`` / ``<!-- name:end -->`` markers, and a
test fails when the README is stale.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import Proto2TorchError
from .layers.registry import LayerSpec, registered, registered_python


def _semantics(spec: LayerSpec) -> str:
    text = spec.description or spec.semantics
    return re.sub(r"\s+", " ", text)


def layer_rows() -> list[tuple[str, str, str]]:
    """(type, aliases, semantics) of every registered layer type, then the Python-layer converters."""
    rows = []
    seen: set[int] = set()
    for name, spec in sorted(registered().items(), key=lambda kv: kv[0].lower()):
        if id(spec) in seen or name != spec.type:
            continue
        seen.add(id(spec))
        rows.append((spec.type, ", ".join(spec.aliases), _semantics(spec)))
    rows += [(f"Python `{key}`", "", _semantics(spec)) for key, spec in sorted(registered_python().items())]
    return rows


def layer_table() -> str:
    """Markdown table of every registered layer type (and Python-layer converter)."""
    lines = ["| Caffe type | also accepted as | semantics |", "| --- | --- | --- |"]
    lines += [f"| {name} | {aliases} | {semantics.replace('|', chr(92) + '|')} |" for name, aliases, semantics in layer_rows()]
    return "\n".join(lines)


@dataclass(frozen=True)
class Problem:
    layer: str
    type: str
    reason: str

    def brief(self) -> str:
        """``layer (type)`` plus the gist of the reason, for one line of the report."""
        gist = _gist(self.reason)
        return f"{self.layer} ({self.type}{': ' + gist if gist else ''})"


@dataclass(frozen=True)
class FileStatus:
    path: str
    supported: bool
    problems: tuple[Problem, ...] = ()
    error: str | None = None
    """The located error that stops the file from loading (an inconsistent net)."""


def corpus_status(root: Path, files: Iterable[Path] | None = None) -> list[FileStatus]:
    """Load every file in TEST phase and record whether it converts fully."""
    from .prototxt.lower import load_prototxt

    out = []
    for path in sorted(files if files is not None else (p for p in root.rglob("*") if p.is_file())):
        rel = str(path.relative_to(root))
        try:
            net = load_prototxt(path)
        except Proto2TorchError as exc:
            where = f"layer '{exc.layer}': " if exc.layer and f"'{exc.layer}'" not in exc.message else ""
            out.append(FileStatus(rel, False, error=where + exc.message.splitlines()[0]))
            continue
        problems = tuple(Problem(u.name, u.type, u.reason) for u in net.unsupported())
        out.append(FileStatus(rel, not problems, problems))
    return out


# (needle in the reason, report heading, pattern whose first group is the gist)
_CATEGORIES = (
    ("template placeholder", "Template placeholders (values the model's scripts substitute; give them with --define)",
     r"(\w+) is the template placeholder '([^']+)'"),
    ("runs user code", "Python layers without a converter (training-time sampling and other user code)",
     r"Python layer (\S+) runs"),
    ("is not produced by any layer", "Fragments: a bottom no layer of the file produces (Caffe refuses these too)",
     r"(bottom '[^']+')"),
    ("no converter for layer type", "Fork layers without a converter", r"()"),
    ("is not understood by this converter", "Fork fields whose meaning is not pinned down", r"fork field (\S+)"),
)


def _category(reason: str) -> str:
    return next((heading for needle, heading, _ in _CATEGORIES if needle in reason), "Other reasons")


def _gist(reason: str) -> str:
    for needle, _, pattern in _CATEGORIES:
        if needle in reason:
            match = re.search(pattern, reason)
            return " = ".join(match.groups()) if match else ""
    return _short(reason, 80)


def corpus_report(statuses: list[FileStatus]) -> str:
    """Markdown: the share of fully supported files, then every other file with its reasons."""
    ok = sum(s.supported for s in statuses)
    lines = [f"{ok} of {len(statuses)} corpus files ({100 * ok / len(statuses):.1f}%) convert fully in the TEST phase.", ""]
    errors = [s for s in statuses if s.error]
    if errors:
        lines += ["Files that do not load (the net contradicts itself, as Caffe's own checks would find):", ""]
        lines += [f"- `{s.path}`: {_short(s.error or '', 200)}" for s in errors]
        lines.append("")
    groups: dict[str, list[FileStatus]] = {}
    for s in statuses:
        if not s.supported and not s.error:
            first = Counter(_category(p.reason) for p in s.problems).most_common(1)[0][0]
            groups.setdefault(first, []).append(s)
    for heading in sorted(groups, key=lambda h: (h == "Other reasons", h)):
        lines += [f"{heading}:", ""]
        for s in groups[heading]:
            shown = list(dict.fromkeys(p.brief() for p in s.problems))
            more = f", and {len(shown) - 4} more" if len(shown) > 4 else ""
            lines.append(f"- `{s.path}`: {', '.join(shown[:4])}{more}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _short(text: str, limit: int = 160) -> str:
    text = text.splitlines()[0].replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the lines between ``<!-- name:begin -->`` and ``<!-- name:end -->`` replaced by ``body``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"no {begin} ... {end} section")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body.rstrip()}\n{end}{tail}"
