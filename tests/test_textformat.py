"""The protobuf text-format front end: grammar coverage, error positions, fast path = grammar."""

from __future__ import annotations

import pytest

from proto2torch.errors import LimitError, ParseError, SchemaError
from proto2torch.prototxt.message import Ident, Source, Template
from proto2torch.prototxt.schema import bind
from proto2torch.prototxt.textformat import MAX_DEPTH, _fast_parse, format_text, parse_text, parse_text_grammar

from .conftest import corpus_files


def _flat(msg):
    return [(n, _flat(v) if hasattr(v, "entries") else (type(v).__name__, v), line, col) for n, v, line, col in msg.entries]


def test_scalars_of_every_kind() -> None:
    text = 'a: 1 b: -2 c: 0x1F d: 1.5e-3 e: .5 f: 2.f g: inf h: -inf i: nan j: true k: MAX s: "x\\ty" t: \'q\' "r"'
    m = parse_text(text)
    assert m.get("a") == 1 and m.get("b") == -2 and m.get("c") == 31
    assert m.get("d") == pytest.approx(1.5e-3) and m.get("e") == 0.5 and m.get("f") == 2.0
    assert m.get("g") == Ident("inf") and m.get("h") == Ident("-inf")
    assert m.get("k") == Ident("MAX") and isinstance(m.get("k"), Ident)
    assert m.get("s") == "x\ty" and m.get("t") == "qr"


def test_messages_lists_separators_and_comments() -> None:
    text = 'layer { name: "a" } # trailing\r\nlayer: { name: "b"; top: "x", }\nlayer < name: "c" >\nshape { dim: [1, 2, 3] }\nl: [{v: 1}, {v: 2}]'
    m = parse_text(text)
    assert [layer.get("name") for layer in m.all("layer")] == ["a", "b", "c"]
    assert m.sub("shape").all("dim") == [1, 2, 3]
    assert [x.get("v") for x in m.all("l")] == [1, 2]


def test_positions_are_kept() -> None:
    m = parse_text('name: "n"\nlayer {\n  type: "ReLU"\n}\n', "f.prototxt")
    layer = m.get("layer")
    assert str(layer.span()) == "f.prototxt:2:1"
    assert str(layer.span("type")) == "f.prototxt:3:3"


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ('layer { name: "x" ', "1:7", "never closed"),
        ('layer { name: "x }', "1:15", "unterminated string"),
        ("a: 1 }", "1:6", "unbalanced"),
        ("a: @", "1:4", "unexpected character"),
        ("layer { a: }", "1:12", "expected"),
        ("a 1", "1:3", "expected"),
    ],
)
def test_syntax_errors_have_position_and_caret(text: str, where: str, words: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_text(text, "bad.prototxt")
    message = str(info.value)
    assert message.startswith(f"bad.prototxt:{where}: ")
    assert words in message
    assert "^" in message.splitlines()[-1]


def test_depth_limit() -> None:
    deep = "a { " * (MAX_DEPTH + 1) + "}" * (MAX_DEPTH + 1)
    with pytest.raises(LimitError):
        parse_text(deep)


def test_binary_input_is_refused() -> None:
    with pytest.raises(ParseError, match="binary"):
        parse_text(b"\x0a\x03net\x00\x01", "w.caffemodel")


def test_templates_and_defines() -> None:
    assert parse_text("n: ${NUM}").get("n") == Template("NUM")
    assert parse_text("n: ${NUM}", defines={"NUM": "21"}).get("n") == 21


def test_write_then_read_is_identity() -> None:
    m = parse_text('name: "n" layer { name: "c" type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 } }')
    again = parse_text(format_text(m))
    assert again == m


def test_schema_types_and_errors() -> None:
    net = bind(parse_text('layer { name: "p" type: "Pooling" pooling_param { pool: AVE kernel_size: 3 } }'), "NetParameter")
    pool = net.get("layer").sub("pooling_param")
    assert pool.get("pool") == "AVE" and pool.get("stride") == 1 and pool.get("global_pooling") is False
    with pytest.raises(SchemaError, match="not repeated but is given more than once"):
        bind(parse_text('name: "a" name: "b"'), "NetParameter")
    with pytest.raises(SchemaError, match="expected a quoted string"):
        bind(parse_text("name: 3"), "NetParameter")
    with pytest.raises(SchemaError, match="must be a message"):
        bind(parse_text("layer: 3"), "NetParameter")
    with pytest.raises(SchemaError, match="out of range"):
        bind(parse_text('layer { convolution_param { num_output: -1 } }'), "NetParameter")


def test_fork_fields_are_kept_and_reported() -> None:
    diagnostics = []
    net = bind(parse_text('layer { name: "i" type: "Interp" interp_param { zoom_factor: 2 } my_field: 3 }'), "NetParameter", diagnostics)
    layer = net.get("layer")
    assert layer.sub("interp_param").get("zoom_factor") == 2
    assert any("my_field" in str(d) for d in diagnostics)


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: str(p.relative_to(p.parents[2])))
def test_fast_path_agrees_with_grammar(path) -> None:
    text = path.read_bytes().decode("utf-8")
    fast = _fast_parse(text, Source(str(path), text))
    if fast is None:  # the fast path declined; the grammar alone decides
        return
    assert _flat(fast) == _flat(parse_text_grammar(text, str(path)))


@pytest.mark.parametrize(
    "escaped, value",
    [(r"\x41\u00e9\101", "Aé" + "A"), (r"\x", r"\x"), (r"\u12", r"\u12"), (r"\U0011FFFF", "\ufffd"), (r"\uD800", "\ufffd"), (r"\q", r"\q")],
)
def test_string_escapes_including_incomplete_and_invalid_ones(escaped: str, value: str) -> None:
    """Found by the fuzzer: an incomplete \\x or \\u escape, or a code point beyond Unicode, is no crash."""
    assert parse_text(f'a: "{escaped}"').get("a") == value
    assert parse_text_grammar(f'a: "{escaped}" b {{ }}').get("a") == value
