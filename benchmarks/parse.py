"""Reading prototxt files: proto2torch against protobuf's own text-format parser.

    python benchmarks/parse.py [FILE.prototxt ...]

Default: ResNet-152's deploy file from the corpus.  Compared, as medians of 20 runs in
one process: protobuf's ``text_format.Merge`` into a ``NetParameter`` (with Caffe's
schema compiled into protobuf classes — what pycaffe and most converters do), proto2torch's
text parse alone, and ``load_prototxt`` (parse, schema, V1/V0 upgrade, lowering to the
IR and shape inference).
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import RESNET152, median_seconds, table


def main(paths: list[Path]) -> None:
    from google.protobuf import text_format

    from proto2torch.prototxt.lower import load_prototxt
    from proto2torch.prototxt.protobuf import caffe_pb2
    from proto2torch.prototxt.textformat import parse_text

    classes = caffe_pb2()
    rows = [("file", "size", "layers", "protobuf text_format", "parse only", "load_prototxt (+ IR, shapes)")]
    for path in paths:
        text = path.read_text()

        def protobuf(text: str = text) -> None:
            text_format.Merge(text, classes.NetParameter())

        base = median_seconds(protobuf, repeat=20, warmup=2)
        parse = median_seconds(lambda text=text: parse_text(text), repeat=20, warmup=2)
        full = median_seconds(lambda path=path: load_prototxt(path), repeat=20, warmup=2)
        layers = len(load_prototxt(path).nodes)
        rows.append((path.name, f"{len(text) / 1024:.0f} KiB", str(layers), f"{base * 1000:.1f} ms", f"{parse / base:.2f}x", f"{full / base:.2f}x"))
    print("medians of 20 runs; ratios to protobuf's text_format.Merge of the same text")
    print(table(rows))


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]] or [RESNET152])
