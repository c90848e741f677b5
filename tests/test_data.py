"""Data layers as Caffe feeds them: every data case (made with real Caffe from sources tests/datagen.py
writes) through the API and ``proto2torch batches``; DataTransformer rules; broken sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from proto2torch.cli import main
from proto2torch.data import DataTransformer, TransformParams, batches, load_mean, parse_datum, write_mean
from proto2torch.data.datum import datum_bytes
from proto2torch.errors import DataError
from proto2torch.prototxt.lower import load_prototxt

from .datagen import materialise

DATA_CASES = Path(__file__).parent / "data" / "data_cases"
NAMES = sorted(p.name for p in DATA_CASES.iterdir() if (p / "meta.json").exists())


def _case(name: str, tmp_path: Path):
    folder = DATA_CASES / name
    meta = json.loads((folder / "meta.json").read_text())
    defines = materialise(folder, tmp_path / "sources")
    with np.load(folder / "expected.npz") as data:
        expected = {k: data[k] for k in data.files}
    return folder, meta, defines, expected


def _compare(ours: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(ours) <= set(expected) and {k.split(":")[1] for k in ours} == {k.split(":")[1] for k in expected}
    for key in ours:
        want = expected[key]
        got = ours[key]
        assert got.shape == want.shape, key
        # bit for bit: the same decode, resize and float32 arithmetic as Caffe's (uint8 and float sources alike)
        np.testing.assert_array_equal(got, want, err_msg=key)


@pytest.mark.parametrize("name", [n for n in NAMES if "train" not in n])
def test_test_phase_batches_equal_caffes_tops(name: str, tmp_path) -> None:
    folder, meta, defines, expected = _case(name, tmp_path)
    net = load_prototxt(folder / "net.prototxt", phase=meta["phase"], defines=defines)
    _compare(batches(net, meta["batches"]), expected)


@pytest.mark.parametrize("name", ["data_lmdb_raw", "data_imagelist", "data_hdf5"])
def test_cli_batches(name: str, tmp_path, capsys) -> None:
    folder, meta, defines, expected = _case(name, tmp_path)
    out = tmp_path / "batches.npz"
    argv = ["batches", str(folder / "net.prototxt"), "--phase", "TEST", "--count", str(meta["batches"]), "-o", str(out)]
    assert main([*argv, "--define", f"DATA={defines['DATA']}"]) == 0, capsys.readouterr().err
    with np.load(out) as data:
        _compare({k: data[k] for k in data.files}, expected)


def test_train_phase_batches_are_crops_and_mirrors_caffe_can_make(tmp_path) -> None:
    folder, meta, defines, expected = _case("data_lmdb_train", tmp_path)
    net = load_prototxt(folder / "net.prototxt", phase="TRAIN", defines=defines)
    ours = batches(net, meta["batches"], seed=3)
    with np.load(folder / "inputs.npz") as data:
        images = [data[k] for k in sorted(data.files) if k.startswith("raw:")]
        labels = [int(data[k]) for k in sorted(data.files) if k.startswith("label:")]
    node = net.nodes[0]
    transformer = DataTransformer(TransformParams.from_msg(node.msg.sub("transform_param"), "data"), "TRAIN", base_dir=None)
    transformer.mean = load_mean(Path(defines["DATA"]) / "mean.binaryproto")
    batch = ours["data:0"].shape[0]
    mirrored = 0
    for source in (ours, expected):
        for k in range(meta["batches"]):
            for i in range(batch):
                record = (k * batch + i) % len(images)
                options = transformer.possible_crops(images[record])
                sample = source[f"data:{k}"][i]
                assert any(np.allclose(sample, o, rtol=0, atol=1e-6) for o in options), (k, i)
                assert source[f"label:{k}"][i] == labels[record]
                if source is ours:
                    mirrored += any(np.allclose(sample, o, atol=1e-6) for o in options[1::2])
    assert 0 < mirrored < meta["batches"] * batch  # both flips occur


def test_train_phase_offsets_are_uniform() -> None:
    """Caffe draws the crop offset uniformly from 0 … size - crop, and mirrors with probability 1/2."""
    image = np.arange(3 * 6 * 6, dtype=np.uint8).reshape(3, 6, 6)
    transformer = DataTransformer(TransformParams(mirror=True, crop_size=4), "TRAIN", rng=np.random.default_rng(0))
    counts: dict[tuple[int, int, bool], int] = {}
    for _ in range(3000):
        out = transformer(image)
        flipped = bool(out[0, 0, 0] > out[0, 0, -1])
        window = out[:, :, ::-1] if flipped else out
        h, w = divmod(int(window[0, 0, 0]), 6)
        counts[(h, w, flipped)] = counts.get((h, w, flipped), 0) + 1
    assert len(counts) == 3 * 3 * 2
    assert max(counts.values()) < 1.4 * 3000 / 18 and min(counts.values()) > 0.6 * 3000 / 18


# --- the transformer's arithmetic ------------------------------------------------------------------

def test_transform_order_is_caffes() -> None:
    image = np.random.default_rng(1).integers(0, 256, (3, 7, 8)).astype(np.uint8)
    mean = np.random.default_rng(2).uniform(0, 255, (3, 7, 8)).astype(np.float32)
    t = DataTransformer(TransformParams(scale=0.017, crop_size=5), "TEST")
    t.mean = mean
    out = t(image)
    want = (image[:, 1:6, 1:6].astype(np.float32) - mean[:, 1:6, 1:6]) * np.float32(0.017)
    np.testing.assert_array_equal(out, want)  # the mean's matching region, subtracted before the scale
    values = DataTransformer(TransformParams(mean_values=(104.0, 117.0, 123.0)), "TEST")(image)
    np.testing.assert_array_equal(values, image.astype(np.float32) - np.array([104, 117, 123], np.float32)[:, None, None])


@pytest.mark.parametrize(
    ("params", "shape", "message"),
    [
        (TransformParams(crop_size=9), (3, 8, 8), "crop_size 9 is larger than the 8x8 image"),
        (TransformParams(mean_values=(1.0, 2.0)), (3, 8, 8), "2 mean_value entries for 3 channels"),
    ],
)
def test_transform_refuses_what_caffe_refuses(params: TransformParams, shape, message: str) -> None:
    with pytest.raises(DataError, match=message):
        DataTransformer(params, "TEST")(np.zeros(shape, np.uint8))


def test_mean_shape_must_fit(tmp_path) -> None:
    write_mean(tmp_path / "mean.binaryproto", np.ones((3, 4, 4), np.float32))
    t = DataTransformer(TransformParams(mean_file=str(tmp_path / "mean.binaryproto")), "TEST")
    with pytest.raises(DataError, match=r"the mean .* is \[3, 4, 4\], the image \[3, 5, 5\]"):
        t(np.zeros((3, 5, 5), np.uint8))


def test_mean_files_round_trip(tmp_path) -> None:
    mean = np.random.default_rng(0).uniform(0, 255, (3, 5, 4)).astype(np.float32)
    np.testing.assert_array_equal(load_mean(write_mean(tmp_path / "m.binaryproto", mean)), mean)
    np.save(tmp_path / "m.npy", mean)
    np.testing.assert_array_equal(load_mean(tmp_path / "m.npy"), mean)
    np.save(tmp_path / "v.npy", np.array([1.0, 2.0, 3.0]))
    assert load_mean(tmp_path / "v.npy").shape == (3, 1, 1)
    (tmp_path / "bad.binaryproto").write_bytes(b"\x3a\x05\x0a\x03\x01\x02")
    with pytest.raises(DataError, match="cannot read mean file"):
        load_mean(tmp_path / "bad.binaryproto")


# --- broken records and sources ----------------------------------------------------------------------

def test_datum_round_trip_and_lies() -> None:
    image = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    datum = parse_datum(datum_bytes(image, 5), "db record 0")
    np.testing.assert_array_equal(datum.array("x"), image)
    assert datum.label == 5
    lying = datum_bytes(np.zeros((2, 3, 5), np.uint8), 1).replace(b"\x18\x05", b"\x18\x04", 1)  # width 5 -> 4
    with pytest.raises(DataError, match=r"db record 7: the datum is 2x3x4 \(24 values\) but holds 30 bytes of data"):
        parse_datum(lying, "db record 7")
    with pytest.raises(DataError, match="truncated"):
        parse_datum(datum_bytes(image, 5)[:-9], "db record 1")
    with pytest.raises(DataError, match="longer than 10 bytes"):
        parse_datum(b"\x08" + b"\xff" * 12, "db record 2")


def _net(tmp_path: Path, layer: str) -> Path:
    path = tmp_path / "net.prototxt"
    path.write_text(layer)
    return path


def test_missing_and_corrupt_sources_are_located_errors(tmp_path) -> None:
    import lmdb

    missing = _net(tmp_path, 'layer { name: "d" type: "Data" top: "data" top: "label" data_param { source: "nowhere" backend: LMDB batch_size: 2 } }')
    with pytest.raises(DataError, match="LMDB database nowhere does not exist"):
        batches(load_prototxt(missing, phase="TEST"), 1)
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"000", datum_bytes(np.zeros((1, 2, 2), np.uint8), 0))
        txn.put(b"001", datum_bytes(np.zeros((1, 2, 2), np.uint8), 0)[:-6])
    env.close()
    corrupt = _net(tmp_path, f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ source: "{tmp_path / "db"}" backend: LMDB batch_size: 2 }} }}')
    with pytest.raises(DataError, match="record '001'"):
        batches(load_prototxt(corrupt, phase="TEST"), 1)
    (tmp_path / "list.txt").write_text("missing.png 1\n")
    images = _net(tmp_path, f'layer {{ name: "d" type: "ImageData" top: "data" top: "label" image_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 1 }} }}')
    with pytest.raises(DataError, match=r"line 1 \(missing.png\): could not open or decode the image"):
        batches(load_prototxt(images, phase="TEST"), 1)


def test_hdf5_dataset_problems(tmp_path) -> None:
    import h5py

    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = np.zeros((4, 2), np.float32)
        f["label"] = np.zeros(3, np.float32)
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.h5'}\n")
    net = _net(tmp_path, f'layer {{ name: "d" type: "HDF5Data" top: "data" top: "label" hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 2 }} }}')
    with pytest.raises(DataError, match="different numbers of rows"):
        batches(load_prototxt(net, phase="TEST"), 1)
    other = _net(tmp_path, f'layer {{ name: "d" type: "HDF5Data" top: "image" hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 2 }} }}')
    with pytest.raises(DataError, match="no dataset 'image'"):
        batches(load_prototxt(other, phase="TEST"), 1)


def test_training_from_a_data_layer_equals_training_on_the_same_inputs(tmp_path) -> None:
    """An HDF5Data layer whose batch is the whole file feeds the same batch every iteration: the run equals one on Input layers."""
    import h5py

    from proto2torch.train import train

    case = Path(__file__).parent / "data" / "conformance" / "train_solver_adam"
    from proto2torch.conformance import Case

    c = Case.load(case)
    inputs = c.inputs()
    with h5py.File(tmp_path / "train.h5", "w") as f:
        for name, value in inputs.items():
            f[name] = value
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'train.h5'}\n")
    text = c.prototxt.read_text().splitlines()
    body = [line for line in text if '"Input"' not in line]
    layer = f'layer {{ name: "h5" type: "HDF5Data" top: "data" top: "label" hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 4 }} }}'
    (tmp_path / "net.prototxt").write_text("\n".join([body[0], layer, *body[1:]]) + "\n")
    (tmp_path / "solver.prototxt").write_text(c.solver.read_text())
    weights = c.write_caffemodel(tmp_path / "w.caffemodel")
    fed = train(tmp_path / "solver.prototxt", weights, iterations=c.meta["iterations"], record=True)
    fixed = train(c.solver, weights, inputs, iterations=c.meta["iterations"], record=True)
    assert fed.losses == fixed.losses


def test_verify_feeds_a_net_from_its_data_layers(tmp_path, capsys) -> None:
    """A reference without input arrays: verify reads the first batch from the net's Data layer, as Caffe's run did."""
    from proto2torch.api import with_weights
    from proto2torch.caffemodel.writer import write_caffemodel
    from proto2torch.data import NetFeed
    from proto2torch.ir.shapes import infer_shapes

    folder, meta, defines, expected = _case("data_lmdb_net", tmp_path)
    net = load_prototxt(folder / "net.prototxt", phase="TEST", defines=defines)
    net = with_weights(infer_shapes(net, {k: v.shape for k, v in next(NetFeed(net)).items()}), None)
    write_caffemodel(tmp_path / "w.caffemodel", ((n.name, n.type, n.blobs) for n in net.nodes if n.blobs))
    reference = {k.split(":")[0]: v for k, v in expected.items() if k.split(":")[0] not in ("data", "label")}
    np.savez(tmp_path / "ref.npz", **reference)
    argv = ["verify", str(folder / "net.prototxt"), "--weights", str(tmp_path / "w.caffemodel"), "--reference", str(tmp_path / "ref.npz")]
    assert main([*argv, "--define", f"DATA={defines['DATA']}"]) == 0, capsys.readouterr()
    assert "PASS" in capsys.readouterr().out
