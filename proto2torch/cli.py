"""The ``proto2torch`` command line.

Exit codes: 0 success; 1 verification mismatch; 2 an error in the input (parse,
schema, graph, shape, weights…), printed without a traceback (``--debug`` shows it);
3 (inspect) the net parsed but has unsupported layers.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import Proto2TorchError


def _shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=d0,d1,..., got {text!r}") from None
    return name, shape


def _ints_arg(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 2,1,0, got {text!r}") from None


def _pair_arg(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _net_options(p: argparse.ArgumentParser, positional: bool = True) -> None:
    if positional:
        p.add_argument("net", help="network definition: .prototxt (V2, V1 or V0) or caffe-tensorflow .py")
    p.add_argument("--input", action="append", type=_shape_arg, default=[], metavar="NAME=d0,d1,...", help="input shape (repeatable)")
    p.add_argument("--phase", choices=("TEST", "TRAIN"), default="TEST")
    p.add_argument("--stage", action="append", default=None, help="NetState stage for include/exclude rules (repeatable)")
    p.add_argument("--level", type=int, default=None, help="NetState level for include/exclude rules")
    p.add_argument("--define", action="append", type=_pair_arg, default=[], metavar="NAME=VALUE", help="value for a ${NAME} placeholder")
    p.add_argument(
        "--semantics", action="append", type=_pair_arg, default=[], metavar="TYPE=MODE", help="choose a fork's semantics, e.g. Upsample=segnet"
    )
    p.add_argument("--format", choices=("prototxt", "dsl"), default=None, help="input format (default: by file suffix)")
    _limit_options(p)
    from .dsl.lower import DIALECTS  # no torch: the DSL reader builds IR only

    p.add_argument("--dialect", default=None, choices=sorted(DIALECTS), help=f"caffe-tensorflow DSL dialect ({', '.join(DIALECTS)}; default: detected from the file)")
    p.add_argument("--class", dest="class_name", default=None, metavar="NAME", help="the model class of a caffe-tensorflow file that defines several (default: the first)")
    p.add_argument(
        "--base", action="append", default=[], metavar="network.py",
        help="a caffe-tensorflow base-class file (the repository's network.py), read as data: its class constants and __init__ values count (repeatable)",
    )
    _plugin_option(p)


def _limit_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("size limits (refused at shape inference, before anything is allocated)")
    g.add_argument("--max-blob", type=int, default=None, metavar="N", help="elements of one blob (default 2^31 - 1, Caffe's own)")
    g.add_argument("--max-params", type=int, default=None, metavar="N", help="learned elements of the whole net (default 2^32)")
    g.add_argument("--max-activations", type=int, default=None, metavar="N", help="elements of all values of a forward pass (default 2^34)")


def _plugin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plugin", action="append", default=[], metavar="FILE.py|MODULE", help="load layer specs of your own (see 'Adding a layer'; repeatable)"
    )


def _load_plugins(args: argparse.Namespace) -> None:
    from .layers.registry import load_plugin

    for plugin in getattr(args, "plugin", []):
        load_plugin(plugin)


def _load(args: argparse.Namespace, unknown_inputs: bool = False):  # noqa: ANN202
    from .api import load_net

    _load_plugins(args)
    return load_net(Path(args.net), dict(args.input) or None, format=args.format, unknown_inputs=unknown_inputs, **_load_options(args))


def _load_options(args: argparse.Namespace) -> dict[str, object]:
    """Every loading option of the command line; ``load_net`` uses those that apply to the file's format."""
    return {
        "phase": args.phase,
        "stages": args.stage,
        "level": args.level,
        "defines": dict(args.define) or None,
        "options": dict(args.semantics) or None,
        "dialect": args.dialect,
        "class_name": args.class_name,
        "base": args.base or None,
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    from .summary import rf_table, summary_dict, summary_table

    net = _load(args, unknown_inputs=True)  # a DSL net without --input is listed with unknown shapes, as a prototxt is
    if args.rf:
        print(rf_table(net))
    elif args.json:
        import json

        print(json.dumps(summary_dict(net), indent=2))
    else:
        print(summary_table(net))
    return 3 if net.unsupported() else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import load_reference, prepare_for_reference, runner, verify_net

    reference = load_reference(args.reference)
    if not args.input:
        args.input = [(k[len("input:") :], tuple(v.shape)) for k, v in reference.items() if k.startswith("input:")]
    net = prepare_for_reference(_load(args), args.weights, reference)
    report = verify_net(net, reference, runner(net, args.backend), rtol=args.rtol, strict=args.strict)
    print(report.to_json() if args.json else report.table())
    if not args.optimize:
        return 0 if report.passed else 1
    from .verify import verify_optimized

    fast, errors = verify_optimized(net, reference, rtol=args.rtol)
    print(f"\nproto2torch.optimize on the reference inputs:\n{fast.table()}")
    bad = [(blob, e) for blob, e in errors if not e <= 1]
    for blob, e in errors:
        print(f"  {fast.choice}: output '{blob}' {'MISMATCH' if (blob, e) in bad else 'ok'} ({e:.3g}x the tolerance)")
    if not errors:
        print("  the reference holds none of the net's outputs: the optimized module is checked against the module only")
    return 0 if report.passed and not bad else 1


def cmd_convert(args: argparse.Namespace) -> int:
    from .api import with_weights

    has_weights = args.weights is not None
    if args.optimize and (args.to != "torch" or not has_weights):
        print("error: --optimize measures the converted module: it needs --to torch (the default) and --weights", file=sys.stderr)
        return 2
    net = _load(args)
    out = Path(args.output)
    if args.to == "torch" and not has_weights:  # the code alone: no weights are made up, none written
        from .backend.source import write_code
        from .ir.weights import parameter_count

        py, class_name = write_code(net, out, args.name, _preprocess(args, net))
        print(f"{net.name}: {len(net.nodes)} layers, {parameter_count(net) or 0:,} parameters")
        print(f"  wrote {py} (class {class_name})")
        print("  no --weights given: the class is written without a state_dict")
        return 0
    net = with_weights(net, args.weights)
    if args.to == "torch":
        from .backend.source import write_source

        py, weights, emitted = write_source(net, out, args.name, _preprocess(args, net), args.weights_format)
        params = sum(t.numel() for t in emitted.state_dict.values() if t.is_floating_point())
        print(f"{net.name}: {len(net.nodes)} layers, {params:,} parameters")
        print(f"  wrote {py} (class {emitted.class_name})")
        print(f"  wrote {weights} (state_dict, {len(emitted.state_dict)} tensors)")
        print(f"  use:  from {py.stem} import build; model = build({str(weights)!r})")
        return _write_optimized(net, py.with_suffix("")) if args.optimize else 0
    if args.to == "dsl":
        from .dsl.emit import write_dsl

        py, npy = write_dsl(net, out, args.name)
        print(f"{net.name}: wrote {py} and {npy}")
        return 0
    from .export import FORMATS, export

    if not has_weights:
        print(f"note: no --weights given: the {args.to} archive holds fresh weights from the layers' fillers", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.name or _stem(net.name)}{FORMATS[args.to]}"
    report = export(net, path, args.to, opset=args.opset)
    dynamic = ", ".join(report.dynamic) or "none (every axis fixed)"
    opset = f", opset {report.opset}" if report.opset else ""
    print(f"{net.name}: wrote {report.path} ({args.to}{opset}; dynamic axes: {dynamic})")
    return 0


def _write_optimized(net, stem: Path) -> int:  # noqa: ANN001
    """convert --optimize: proto2torch.optimize on seeded inputs of the net's shapes (after fold-bn),
    its choice written as a file torch loads alone, reloaded and checked against the unoptimised module."""
    import numpy as np
    import torch

    from .backend.live import build_graph_module
    from .optimization import optimize, save_optimized
    from .passes import run_passes

    rng = np.random.default_rng(0)
    inputs = [torch.from_numpy(rng.uniform(-1, 1, net.values[v].shape).astype(np.float32)) for v in net.inputs]
    reference = build_graph_module(net)
    print("\nproto2torch.optimize (fold-bn first), on seeded inputs of the net's shapes:")
    fast = optimize(build_graph_module(run_passes(net, ["fold-bn"]).net), *inputs)
    print(fast.table())
    saved = save_optimized(fast, reference, *inputs, stem=stem)
    if saved.path is None:
        print(f"  nothing else to write: {saved.load}")
        return 0
    ok = saved.error is not None and saved.error <= 1
    for reason in saved.passed_over:
        print(f"  passed over: {reason}")
    print(f"  wrote {saved.path} ({saved.choice}; written and reloaded in {saved.build_s:.1f} s; {saved.ms:.2f} ms per call)")
    print(f"  its outputs against the unoptimised module: {'ok' if ok else 'MISMATCH'} ({saved.error if saved.error is not None else float('nan'):.3g}x the 1e-4 tolerance)")
    print(f"  use:  model = {saved.load}")
    return 0 if ok else 1


def _preprocess(args: argparse.Namespace, net):  # noqa: ANN001, ANN202
    """convert's --mean/--channel-swap/--raw-scale/--input-scale (pycaffe's Transformer), or --preprocess-from LAYER."""
    from .data.preprocess import Preprocess, from_transform_param

    if args.preprocess_from:
        node = net.find(args.preprocess_from)
        if node is None or node.msg is None or not node.msg.has("transform_param"):
            raise Proto2TorchError(f"--preprocess-from: the net has no layer '{args.preprocess_from}' with a transform_param")
        return from_transform_param(node.msg.sub("transform_param"), Path(args.net).parent)
    if not (args.mean or args.channel_swap or args.raw_scale or args.input_scale):
        return None
    mean = None
    if args.mean:
        from .data.datum import load_mean

        mean = load_mean(args.mean)
        if args.mean_per_channel:
            mean = mean.mean(1).mean(1)  # as classify.py averages it (rows, then columns: the same float32 values)
    return Preprocess(channel_swap=args.channel_swap, raw_scale=args.raw_scale, mean=mean, input_scale=args.input_scale)


def cmd_surgery(args: argparse.Namespace) -> int:
    from .api import with_weights
    from .caffemodel.writer import write_caffemodel
    from .ir.shapes import infer_shapes
    from .passes import run_passes
    from .prototxt.writer import write_prototxt

    reshape, args.input = dict(args.input) or None, []
    net = with_weights(_load(args), args.weights)  # passes see the net's declared input shapes
    if args.check:
        from .passes.check import check_passes

        result, checks = check_passes(net, args.passes)
    else:
        result, checks = run_passes(net, args.passes), []
    if reshape:
        result.net = infer_shapes(result.net, reshape)
    for line in result.log:
        print(line)
    for check in checks:
        print(check.line())
    failed = [c for c in checks if c.passed is False]
    if failed:
        print(f"surgery --check failed at pass {failed[0].step}, layer '{failed[0].layer}': nothing written", file=sys.stderr)
        return 1
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or _stem(result.net.name)
    proto = write_prototxt(result.net, out / f"{stem}.prototxt")
    model = out / f"{stem}.caffemodel"
    size = write_caffemodel(model, ((n.name, n.type, n.blobs) for n in result.net.nodes if n.blobs), net_name=result.net.name)
    shapes = ", ".join(f"{result.net.values[v].blob} {'x'.join(map(str, result.net.values[v].shape or ()))}" for v in result.net.outputs)
    print(f"wrote {proto} ({len(result.net.nodes)} layers) and {model} ({size:,} bytes); outputs: {shapes}")
    return 0


def _stem(name: str) -> str:
    from .backend.names import identifier

    return identifier(name)


def cmd_draw(args: argparse.Namespace) -> int:
    from .draw import draw

    path = draw(_load(args), args.output)
    print(f"wrote {path}")
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    import dataclasses

    from .passes import PASSES, _ensure_loaded

    _ensure_loaded()
    for name, cls in sorted(PASSES.items()):
        options = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        print(f"{name:18s} {cls.summary}" + (f"\n{'':18s} options: {options}" if options else ""))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    _load_plugins(args)
    main_rank, device = _join_torchrun(args.device)
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return _train(args, main_rank, device)
    try:
        code = _train(args, main_rank, device)
    except Proto2TorchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    # a rank leaves without running C++ static destructors: gloo's threads can abort the process there
    # ("terminate called without an active exception") after the work is done and written
    os._exit(code)


def _train(args: argparse.Namespace, main_rank: bool, device: str) -> int:
    from .train import train
    from .train.loop import read_inputs

    inputs = read_inputs(args.inputs) if args.inputs else {}
    options = dict(args.semantics) if args.semantics else None
    result = train(
        args.solver,
        args.weights,
        inputs,
        iterations=args.iterations,
        record=args.record is not None,
        snapshot_dir=args.snapshot,
        resume=args.resume,
        backend=args.backend,
        options=options,
        device=device,
    )
    if not main_rank:
        return 0
    if args.record is not None:
        result.record.save(args.record)
        print(f"wrote {args.record} ({len(result.record.arrays)} arrays)")
    for path in result.snapshots:
        print(f"wrote {path}")
    if result.losses:
        print(f"{len(result.losses)} iterations: loss {result.losses[0]:.6g} -> {result.losses[-1]:.6g}")
    return 0


def _join_torchrun(device: str) -> tuple[bool, str]:
    """Under torchrun (WORLD_SIZE > 1) join the process group: gloo on the CPU, NCCL on GPUs (each
    rank on the GPU of its LOCAL_RANK).  Whether this is rank 0, and this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return True, device
    import torch
    import torch.distributed as dist

    gpu = device.startswith("cuda")
    if gpu:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpu else "gloo")
    return dist.get_rank() == 0, device


def cmd_batches(args: argparse.Namespace) -> int:
    from .caffemodel.writer import atomic_open
    from .data.layers import batches

    net = _load(args)
    arrays = batches(net, args.count, seed=args.seed)
    with atomic_open(args.output) as f:
        np.savez(f, **arrays)
    tops = sorted({k.rsplit(":", 1)[0] for k in arrays})
    print(f"wrote {args.output}: {args.count} batch(es) of {', '.join(tops)}")
    return 0


def cmd_case(args: argparse.Namespace) -> int:
    from .conformance import Case

    case = Case.load(args.case)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    weights = case.write_caffemodel(out / "weights.caffemodel")
    if case.is_training:
        inputs = out / "inputs.npz"
        np.savez(inputs, **{f"input:{k}": v for k, v in case.inputs().items()})
        print(f"{case.name}: wrote {weights} and {inputs}")
        print(f"next: proto2torch train {case.solver} --weights {weights} --inputs {inputs} --iterations {case.meta['iterations']} --record record.npz")
        return 0
    reference = case.write_reference(out / "reference.npz")
    print(f"{case.name}: wrote {weights} ({case.meta.get('weights_format', 'v2')}) and {reference}")
    semantics = "".join(f" --semantics {k}={v}" for k, v in case.semantics.items())
    print(f"next: proto2torch verify {case.prototxt} --weights {weights} --reference {reference} --rtol {case.rtol}{semantics}")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from .progress import Progress
    from .zoo import ZooOptions, exit_code, find_nets, run_zoo, table, write_reports

    options = ZooOptions(
        inputs=tuple(args.input),
        load=tuple(_load_options(args).items()),
        weights_format=args.weights_format,
        rtol=args.rtol,
        plugins=tuple(str(Path(p).resolve()) if Path(p).suffix == ".py" else p for p in args.plugin),
    )
    nets = find_nets(args.folder)
    total = len(nets)
    if not total:
        raise Proto2TorchError(f"zoo: no nets (.prototxt, prototxt .pt, caffe-tensorflow .py) under {args.folder}")
    with Progress("converting", total, unit="net") as bar:
        count = 0

        def tick(result) -> None:  # noqa: ANN001
            nonlocal count
            count += 1
            bar.update(count)

        results = run_zoo(args.folder, args.output, options, jobs=args.jobs, on_result=tick, nets=nets)
    print(table(results))
    json_path, html_path = write_reports(results, args.folder, args.output)
    print(f"wrote {json_path} and {html_path}")
    return exit_code(results)


def cmd_localize(args: argparse.Namespace) -> int:
    from .api import with_weights
    from .localize import localize_net
    from .train.loop import read_inputs

    inputs = read_inputs(args.inputs)
    if not inputs:
        raise Proto2TorchError(f"{args.inputs} holds no input:NAME arrays")
    args.input = [(k, tuple(v.shape)) for k, v in inputs.items()] + list(args.input)
    net = with_weights(_load(args), args.weights)
    blob, boxes = localize_net(net, inputs, args.threshold, blob=args.blob, best_only=not args.all, connectivity=args.connectivity)
    if args.json:
        import json

        print(json.dumps({"blob": blob, "threshold": args.threshold, "images": [[b.as_dict() for b in image] for image in boxes]}, indent=2))
        return 0
    for n, image in enumerate(boxes):
        print(f"image {n}: {len(image)} box(es) on '{blob}' above {args.threshold:g}")
        for b in image:
            x0, y0, x1, y1 = b.box
            print(f"  class {b.label:4d}  score {b.score:.4g}  box ({x0:.1f}, {y0:.1f}) - ({x1:.1f}, {y1:.1f})  map {b.map_box}  {b.pixels} px")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from .coverage import layer_rows

    _load_plugins(args)
    rows = layer_rows()
    width = max(len(name) for name, _, _ in rows)
    for name, aliases, semantics in rows:
        also = f" (also {aliases})" if aliases else ""
        print(f"{name:{width}s}  {semantics}{also}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proto2torch", description="Caffe / caffe-tensorflow networks to PyTorch, verified blob by blob.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="list layers with shapes, parameters, receptive field and stride")
    _net_options(p)
    p.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.add_argument("--rf", action="store_true", help="receptive field, jump and offset of every layer (where output pixels sit on the input)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("verify", help="run the net and compare every blob with reference values")
    _net_options(p)
    p.add_argument("--weights", required=True, help=".caffemodel (or weights .npy for DSL nets)")
    p.add_argument("--reference", required=True, help=".npz, .h5 or a folder of .npy files: expected blobs by name, inputs as input:NAME")
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--strict", action="store_true", help="ill-conditioned blobs without a layer-local check fail")
    p.add_argument("--backend", choices=("live", "source"), default="live", help="run the live module or the emitted source")
    p.add_argument("--json", action="store_true")
    p.add_argument("--optimize", action="store_true", help="also run proto2torch.optimize (fastest path, measured) and check its outputs against the reference")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("convert", help="write a standalone PyTorch .py + weights, an ONNX/TorchScript/torch.export archive, or caffe-tensorflow DSL")
    _net_options(p)
    p.add_argument("--weights", default=None, help=".caffemodel (or weights .npy for DSL nets)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument(
        "--to", choices=("torch", "onnx", "torchscript", "exported", "dsl"), default="torch",
        help="torch: .py + weights (default); onnx: .onnx; torchscript: frozen .pt; exported: torch.export .pt2; dsl: caffe-tensorflow .py + .npy",
    )
    p.add_argument("--weights-format", choices=("safetensors", "pth"), default="safetensors", help="weights file of --to torch (default safetensors)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset of --to onnx (default 18)")
    g = p.add_argument_group("preprocess() in the emitted class (pycaffe's caffe.io.Transformer)")
    g.add_argument("--mean", default=None, metavar="MEAN", help=".binaryproto or .npy mean subtracted after scaling")
    g.add_argument("--mean-per-channel", action="store_true", help="average the mean file over H and W (as classify.py does)")
    g.add_argument("--channel-swap", type=_ints_arg, default=None, metavar="2,1,0", help="channel order, e.g. 2,1,0 for RGB -> BGR")
    g.add_argument("--raw-scale", type=float, default=None, metavar="S", help="multiply the [0, 1] image by S (e.g. 255)")
    g.add_argument("--input-scale", type=float, default=None, metavar="S", help="multiply after the mean")
    g.add_argument("--preprocess-from", default=None, metavar="LAYER", help="use this data layer's transform_param instead")
    p.add_argument("--name", default=None, help="file stem (default: the net's name)")
    p.add_argument(
        "--optimize", action="store_true",
        help="with --to torch and --weights: also run proto2torch.optimize on the net's input shapes and write its choice "
        "(<name>.optimized.pt TorchScript or .pt2 AOTInductor), checked against the module",
    )  # fmt: skip
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("surgery", help="apply passes; write the result as .prototxt + .caffemodel")
    _net_options(p)
    p.add_argument("--weights", default=None, help=".caffemodel of the net (default: fresh weights from the layers' fillers, seeded)")
    p.add_argument("--pass", dest="passes", action="append", required=True, metavar="SPEC", help="e.g. fc-to-conv, dilate:output_stride=8, cut:after=res5c (repeatable, in order)")
    p.add_argument(
        "--check", action="store_true",
        help="run the net before and after each pass on a seeded input and check what the pass must keep; exit 1 (nothing written) naming the layer where it broke",
    )
    p.epilog = "--input reshapes the result after the passes (passes see the declared input shapes)"
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--name", default=None, help="file stem (default: the net's name)")
    p.set_defaults(func=cmd_surgery)

    p = sub.add_parser("passes", help="list the surgery passes and their options")
    p.set_defaults(func=cmd_passes)

    p = sub.add_parser("draw", help="the graph as Graphviz DOT, or SVG/PNG when the dot program exists")
    _net_options(p)
    p.add_argument("-o", "--output", required=True, help="net.dot, net.svg or net.png")
    p.set_defaults(func=cmd_draw)

    p = sub.add_parser("layers", help="the supported layer types (with your plugins') and whose semantics each follows")
    _plugin_option(p)
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("train", help="train the solver's net as Caffe's solver would; record, snapshot, resume")
    p.add_argument("solver", help="solver.prototxt (its net: is read beside it)")
    p.add_argument("--weights", default=None, help="initial .caffemodel (layers it lacks are filled from their fillers)")
    p.add_argument("--inputs", default=None, metavar="IN.npz", help="input:NAME arrays fed to the net's Input layers every iteration")
    p.add_argument("--iterations", type=int, default=None, metavar="N", help="iterations to run (default: the solver's max_iter)")
    p.add_argument("--record", default=None, metavar="OUT.npz", help="write loss:K, grad:LAYER:I, after:LAYER:I and blob:NAME")
    p.add_argument("--snapshot", default=None, metavar="DIR", help="write <prefix>_iter_<N>.caffemodel + .solverstate at the solver's interval and at the end")
    p.add_argument("--resume", default=None, metavar="STATE.solverstate", help="continue from a Caffe solver state")
    p.add_argument("--backend", choices=("live", "source"), default="live", help="train the live module or the emitted source")
    p.add_argument("--device", default="cpu", help="where to train: cpu (default) or cuda (under torchrun: each rank's GPU)")
    _limit_options(p)
    p.add_argument("--semantics", action="append", type=_pair_arg, default=[], metavar="TYPE=MODE", help="choose a fork's semantics")
    _plugin_option(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("batches", help="the tops the net's data layers produce for the first batches (keys <top>:<k>)")
    _net_options(p)
    p.add_argument("--count", type=int, default=1, metavar="N", help="number of batches (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the TRAIN-phase random crops, mirrors, shuffles and skips")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    p.set_defaults(func=cmd_batches)

    p = sub.add_parser("localize", help="boxes from a class score map (DRN: arg-max class, threshold, connected regions, best box per class)")
    _net_options(p)
    p.add_argument("--weights", default=None, help=".caffemodel (default: the layers' fillers)")
    p.add_argument("--inputs", required=True, metavar="IN.npz", help="input:NAME arrays to run the net on")
    p.add_argument("--threshold", type=float, required=True, help="a pixel counts for its arg-max class when that score exceeds this")
    p.add_argument("--blob", default=None, help="the score map (default: the first 4-d output)")
    p.add_argument("--all", action="store_true", help="every region, not only each class's best")
    p.add_argument("--connectivity", type=int, choices=(4, 8), default=8)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_localize)

    p = sub.add_parser(
        "zoo",
        help="convert (and verify, where a reference lies beside a net) every net in a folder tree, in parallel; JSON + HTML report",
        epilog="exit codes: 0 every net converted (and verified); 1 a verification failed or a net crashed the converter; "
        "3 some nets do not convert (listed); 2 an error (no such folder, no nets)",
    )
    p.add_argument("folder", help="folder searched for .prototxt, prototxt .pt and caffe-tensorflow .py files (solvers are left out)")
    p.add_argument("-o", "--output", required=True, help="output folder: <net's folder>/<stem>.py (+ weights), zoo.json, zoo.html")
    p.add_argument("--jobs", "-j", type=int, default=None, metavar="N", help="worker processes (default: one per core)")
    p.add_argument("--weights-format", choices=("safetensors", "pth"), default="safetensors")
    p.add_argument("--rtol", type=float, default=1e-4, help="verification tolerance (as verify's)")
    _net_options(p, positional=False)
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("case", help="materialise a conformance case: weights.caffemodel + reference.npz (training cases: inputs.npz)")
    p.add_argument("case", help="case folder (net.prototxt, recipe.json, expected.npz, meta.json)")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_case)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if any(getattr(args, k, None) for k in ("max_blob", "max_params", "max_activations")):
            from .layers.registry import set_limits

            set_limits(args.max_blob, args.max_params, args.max_activations)
        return int(args.func(args) or 0)
    except Proto2TorchError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (OSError, MemoryError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
