"""The segmentation forks' data layers (DeepLab's ImageSegData, SegNet's and ENet's DenseImageData).

No oracle of these forks builds here, so the expected tops are written out pixel by pixel from the
forks' transforms (``TransformImgAndSeg``; SegNet's flip, crop and ``preserve_pixel_vals`` transform),
independently of the vectorised code under test; OpenCV, the library both forks call, decodes and
resizes in both.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from proto2torch.cli import main
from proto2torch.data import batches
from proto2torch.errors import DataError
from proto2torch.prototxt.lower import load_prototxt

MEANS = (104.008, 116.669, 122.675)


def _pairs(folder: Path, sizes: list[tuple[int, int]], classes: int = 21, seed: int = 0) -> list[tuple[str, str]]:
    """Colour PNG images and grey PNG label maps (values 0..classes-1 and 255) of the given sizes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        label = rng.integers(0, classes, (h, w), dtype=np.uint8)
        label[rng.random((h, w)) < 0.1] = 255
        cv2.imwrite(str(folder / f"img{i}.png"), image)
        cv2.imwrite(str(folder / f"seg{i}.png"), label)
        out.append((f"/img{i}.png", f"/seg{i}.png"))
    return out


def _net(tmp_path: Path, layer: str, phase: str = "TEST") -> object:
    path = tmp_path / "net.prototxt"
    path.write_text(f'name: "seg"\nlayer {{\n{layer}\n}}\n')
    return load_prototxt(path, phase=phase)


def _imageseg(tmp_path: Path, lines: list[str], transform: str, extra: str = "", tops: int = 3) -> str:
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    names = ["data", "label", "data_dim"][:tops]
    return (
        'name: "data" type: "ImageSegData" ' + " ".join(f'top: "{t}"' for t in names)
        + f" transform_param {{ {transform} }}"
        + f' image_data_param {{ root_folder: "{tmp_path / "files"}" source: "{tmp_path / "list.txt"}" batch_size: 2 {extra} }}'
    )


def _deeplab_expected(image: np.ndarray, label: np.ndarray, crop: tuple[int, int], means, scale: float, ignore: int, mirror: bool, offset=None):
    """DeepLab's TransformImgAndSeg, one pixel at a time: pad bottom/right, crop, subtract, scale."""
    h_img, w_img = image.shape[:2]
    crop_h, crop_w = crop
    height, width = max(h_img, crop_h), max(w_img, crop_w)
    h_off, w_off = offset if offset is not None else ((height - crop_h) // 2, (width - crop_w) // 2)
    data = np.zeros((3, crop_h, crop_w), np.float32)
    seg = np.zeros((1, crop_h, crop_w), np.float32)
    for h in range(crop_h):
        for w in range(crop_w):
            y, x = h + h_off, w + w_off
            col = crop_w - 1 - w if mirror else w
            for c in range(3):
                pixel = float(image[y, x, c]) if y < h_img and x < w_img else float(np.float32(means[c]))
                data[c, h, col] = (np.float32(pixel) - np.float32(means[c])) * np.float32(scale)
            seg[0, h, col] = float(label[y, x]) if y < h_img and x < w_img else float(ignore)
    return data, seg


def test_imageseg_test_phase_pads_crops_and_keeps_labels(tmp_path) -> None:
    sizes = [(9, 14), (13, 7), (10, 10)]
    pairs = _pairs(tmp_path / "files", sizes)
    layer = _imageseg(tmp_path, [f"{a} {b}" for a, b in pairs], "crop_size: 11 scale: 0.5 " + " ".join(f"mean_value: {m}" for m in MEANS), "label_type: PIXEL")
    ours = batches(_net(tmp_path, layer), 2)
    assert ours["data:0"].shape == (2, 3, 11, 11) and ours["label:0"].shape == (2, 1, 11, 11) and ours["data_dim:0"].shape == (2, 1, 1, 2)
    for k in range(2):
        for i in range(2):
            n = (2 * k + i) % len(sizes)
            image = cv2.imread(str(tmp_path / "files" / f"img{n}.png"))
            label = cv2.imread(str(tmp_path / "files" / f"seg{n}.png"), cv2.IMREAD_GRAYSCALE)
            data, seg = _deeplab_expected(image, label, (11, 11), MEANS, 0.5, 255, False)
            np.testing.assert_array_equal(ours[f"data:{k}"][i], data)
            np.testing.assert_array_equal(ours[f"label:{k}"][i], seg)
            np.testing.assert_array_equal(ours[f"data_dim:{k}"][i, 0, 0], [min(11, sizes[n][0]), min(11, sizes[n][1])])
    # the padding: image pixels at the mean (0 after subtracting it), the label at ignore_label
    assert np.all(ours["data:0"][0, :, 9:, :] == 0) and np.all(ours["label:0"][0, 0, 9:, :] == 255)


def test_imageseg_crop_height_width_resize_and_two_tops(tmp_path) -> None:
    pairs = _pairs(tmp_path / "files", [(20, 30), (25, 17)])
    layer = _imageseg(
        tmp_path, [f"{a} {b}" for a, b in pairs], "crop_height: 8 crop_width: 12 mean_value: 100", "new_height: 16 new_width: 18 label_type: PIXEL", tops=2
    )
    ours = batches(_net(tmp_path, layer), 1)
    assert set(ours) == {"data:0", "label:0"}
    for i in range(2):
        image = cv2.resize(cv2.imread(str(tmp_path / "files" / f"img{i}.png")), (18, 16))
        label = cv2.resize(cv2.imread(str(tmp_path / "files" / f"seg{i}.png"), cv2.IMREAD_GRAYSCALE), (18, 16))  # bilinear, as DeepLab reads it
        data, seg = _deeplab_expected(image, label, (8, 12), (100.0,) * 3, 1.0, 255, False)
        np.testing.assert_array_equal(ours["data:0"][i], data)
        np.testing.assert_array_equal(ours["label:0"][i], seg)


@pytest.mark.parametrize(("label_type", "second", "extra", "value"), [("IMAGE", "7", "", 7), ("NONE", "", "ignore_label: 300", 255), ("NONE", "", "ignore_label: 4", 4)])
def test_imageseg_image_and_none_labels_fill_the_map(tmp_path, label_type, second, extra, value) -> None:
    pairs = _pairs(tmp_path / "files", [(6, 6), (6, 6)])
    layer = _imageseg(tmp_path, [f"{a} {second}".strip() for a, _ in pairs], "", f"label_type: {label_type} {extra}")
    ours = batches(_net(tmp_path, layer), 1)
    assert ours["label:0"].shape == (2, 1, 6, 6)
    assert np.all(ours["label:0"] == value)  # written into a uint8 map, as cv::Scalar saturates
    np.testing.assert_array_equal(ours["data:0"][0], cv2.imread(str(tmp_path / "files" / "img0.png")).transpose(2, 0, 1).astype(np.float32))


def test_imageseg_train_crops_and_flips_image_and_label_together(tmp_path) -> None:
    pairs = _pairs(tmp_path / "files", [(9, 10)] * 3, seed=5)
    layer = _imageseg(tmp_path, [f"{a} {b}" for a, b in pairs], "mirror: true crop_size: 6 " + " ".join(f"mean_value: {m}" for m in MEANS), "label_type: PIXEL shuffle: true")
    ours = batches(_net(tmp_path, layer, "TRAIN"), 6, seed=1)
    images = [cv2.imread(str(tmp_path / "files" / f"img{n}.png")) for n in range(3)]
    labels = [cv2.imread(str(tmp_path / "files" / f"seg{n}.png"), cv2.IMREAD_GRAYSCALE) for n in range(3)]
    options = [
        _deeplab_expected(images[n], labels[n], (6, 6), MEANS, 1.0, 255, m, (h, w))
        for n in range(3) for m in (False, True) for h in range(4) for w in range(5)
    ]
    flips = set()
    for k in range(6):
        for i in range(2):
            data, seg = ours[f"data:{k}"][i], ours[f"label:{k}"][i]
            match = [j for j, (d, s) in enumerate(options) if np.array_equal(d, data) and np.array_equal(s, seg)]
            assert match, (k, i)  # one window and one flip for both image and label
            flips.add(match[0] // 20 % 2)
    assert flips == {0, 1}


def test_imageseg_scale_factors_resize_image_bilinear_and_label_nearest(tmp_path) -> None:
    pairs = _pairs(tmp_path / "files", [(8, 10)], classes=3)
    layer = _imageseg(tmp_path, [f"{a} {b}" for a, b in pairs], "scale_factors: 1.5", "label_type: PIXEL batch_size: 1")
    layer = layer.replace("batch_size: 2 ", "")
    ours = batches(_net(tmp_path, layer, "TRAIN"), 1)
    image = cv2.imread(str(tmp_path / "files" / "img0.png"))
    label = cv2.imread(str(tmp_path / "files" / "seg0.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(ours["data:0"][0], cv2.resize(image, (15, 12)).transpose(2, 0, 1).astype(np.float32))
    np.testing.assert_array_equal(ours["label:0"][0, 0], cv2.resize(label, (15, 12), interpolation=cv2.INTER_NEAREST).astype(np.float32))
    np.testing.assert_array_equal(ours["data_dim:0"][0, 0, 0], [8, 10])  # the size before the scale draw


@pytest.mark.parametrize(
    ("transform", "extra", "lines", "message"),
    [
        ('mean_file: "mean.binaryproto"', "label_type: PIXEL", None, "does not support mean_file"),
        ("crop_size: 20", "label_type: PIXEL", None, "padded with mean_value"),
        ("crop_size: 4 crop_height: 4 crop_width: 4", "label_type: PIXEL", None, "not both"),
        ("", "label_type: PIXEL", ["/img0.png /seg1.png"], "the label map /seg1.png is 7x9, its image 6x8"),
        ("", "label_type: PIXEL", ["/img0.png /nothing.png"], "nothing.png"),
        ("", "label_type: PIXEL", ["/img0.png"], "needs 'image label_image'"),
        ("", "label_type: IMAGE", ["/img0.png cat"], "needs a class number"),
        ("", "label_type: PIXEL", ["/img0.png /seg0.png", "/img1.png /seg1.png"], "give new_height/new_width or a crop"),
    ],
)
def test_imageseg_bad_input_is_a_data_error(tmp_path, transform, extra, lines, message) -> None:
    pairs = _pairs(tmp_path / "files", [(6, 8), (7, 9)])
    layer = _imageseg(tmp_path, lines or [f"{a} {b}" for a, b in pairs], transform, extra)
    with pytest.raises(DataError, match=message):
        batches(_net(tmp_path, layer), 2)


def _dense(tmp_path: Path, pairs: list[tuple[str, str]], param: str, transform: str = "") -> str:
    (tmp_path / "list.txt").write_text("".join(f"{a} {b}\n" for a, b in pairs))
    return (
        'name: "data" type: "DenseImageData" top: "data" top: "label"'
        + (f" transform_param {{ {transform} }}" if transform else "")
        + f' dense_image_data_param {{ root_folder: "{tmp_path / "files"}" source: "{tmp_path / "list.txt"}" {param} }}'
    )


def test_dense_image_data_resizes_image_bilinear_label_nearest_and_divides(tmp_path) -> None:
    pairs = _pairs(tmp_path / "files", [(20, 24), (17, 31)])
    layer = _dense(tmp_path, pairs, "batch_size: 2 new_height: 16 new_width: 24 label_divide_factor: 4", "scale: 0.25 mean_value: 10 mean_value: 20 mean_value: 30")
    ours = batches(_net(tmp_path, layer), 1)
    assert ours["data:0"].shape == (2, 3, 16, 24) and ours["label:0"].shape == (2, 1, 4, 6)
    for i in range(2):
        image = cv2.resize(cv2.imread(str(tmp_path / "files" / f"img{i}.png")), (24, 16)).astype(np.float32)
        label = cv2.resize(cv2.imread(str(tmp_path / "files" / f"seg{i}.png"), cv2.IMREAD_GRAYSCALE), (6, 4), interpolation=cv2.INTER_NEAREST)
        want = np.empty((3, 16, 24), np.float32)
        for c, m in enumerate((10, 20, 30)):
            want[c] = (image[:, :, c] - np.float32(m)) * np.float32(0.25)
        np.testing.assert_array_equal(ours["data:0"][i], want)
        np.testing.assert_array_equal(ours["label:0"][i, 0], label.astype(np.float32))  # label values untouched by mean and scale


def test_dense_image_data_batch_of_one_keeps_each_size(tmp_path) -> None:
    pairs = _pairs(tmp_path / "files", [(5, 7), (9, 4)])
    ours = batches(_net(tmp_path, _dense(tmp_path, pairs, "batch_size: 1")), 3)
    assert [ours[f"data:{k}"].shape for k in range(3)] == [(1, 3, 5, 7), (1, 3, 9, 4), (1, 3, 5, 7)]
    assert ours["label:1"].shape == (1, 1, 9, 4)


def test_dense_image_data_flips_and_crops_both_in_every_phase(tmp_path) -> None:
    pairs = _pairs(tmp_path / "files", [(8, 9)], seed=2)
    layer = _dense(tmp_path, pairs, "batch_size: 4 mirror: true crop_height: 5 crop_width: 6")
    ours = batches(_net(tmp_path, layer, "TEST"), 4, seed=0)
    image = cv2.imread(str(tmp_path / "files" / "img0.png")).transpose(2, 0, 1).astype(np.float32)
    label = cv2.imread(str(tmp_path / "files" / "seg0.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    seen = set()
    for k in range(4):
        for i in range(4):
            data, seg = ours[f"data:{k}"][i], ours[f"label:{k}"][i, 0]
            found = [
                (flip, h, w) for flip in (False, True) for h in range(4) for w in range(4)
                if np.array_equal(data, (image[:, :, ::-1] if flip else image)[:, h : h + 5, w : w + 6])
                and np.array_equal(seg, (label[:, ::-1] if flip else label)[h : h + 5, w : w + 6])
            ]
            assert found, (k, i)
            seen.add(found[0])
    assert len(seen) > 4 and {f for f, _, _ in seen} == {False, True}


@pytest.mark.parametrize(
    ("param", "transform", "pairs", "message"),
    [
        ("batch_size: 1", "mirror: true", None, "would move the image and its label apart"),
        ("batch_size: 1 label_divide_factor: 2", "", None, "needs new_height/new_width"),
        ("batch_size: 2", "", None, "give new_height/new_width"),
        ("batch_size: 1", "", [("/img0.png", "/seg1.png")], "expected 5x7"),
        ("batch_size: 1 crop_height: 9 crop_width: 9", "", None, "larger than the 5x7 image"),
        ("batch_size: 1 new_height: 4", "", None, "together"),
    ],
)
def test_dense_image_data_bad_input_is_a_data_error(tmp_path, param, transform, pairs, message) -> None:
    made = _pairs(tmp_path / "files", [(5, 7), (9, 4)])
    layer = _dense(tmp_path, pairs or made, param, transform)
    with pytest.raises(DataError, match=message):
        batches(_net(tmp_path, layer), 2)


def test_dense_image_data_list_of_unpaired_names_is_refused(tmp_path) -> None:
    _pairs(tmp_path / "files", [(5, 7)])
    layer = _dense(tmp_path, [("/img0.png", "/seg0.png")], "batch_size: 1")
    (tmp_path / "list.txt").write_text("/img0.png /seg0.png\n/img0.png\n")
    with pytest.raises(DataError, match="3 names"):
        batches(_net(tmp_path, layer), 1)


def test_cli_batches_of_an_imageseg_net(tmp_path, capsys) -> None:
    pairs = _pairs(tmp_path / "files", [(6, 6), (6, 6)])
    path = tmp_path / "net.prototxt"
    path.write_text('name: "seg"\nlayer {\n' + _imageseg(tmp_path, [f"{a} {b}" for a, b in pairs], "mean_value: 1", "label_type: PIXEL") + "\n}\n")
    out = tmp_path / "b.npz"
    assert main(["batches", str(path), "--phase", "TEST", "--count", "2", "-o", str(out)]) == 0, capsys.readouterr().err
    with np.load(out) as data:
        assert sorted(data.files) == ["data:0", "data:1", "data_dim:0", "data_dim:1", "label:0", "label:1"]
        seg = cv2.imread(str(tmp_path / "files" / "seg1.png"), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(data["label:1"][1, 0], seg.astype(np.float32))


def test_deeplab_corpus_data_layers_have_their_shapes() -> None:
    corpus = Path(__file__).parent / "data" / "corpus" / "prototxt" / "talent518__deeplab-public-ver2" / "exper" / "voc12" / "config" / "vgg16" / "train.prototxt"
    net = load_prototxt(corpus, phase="TRAIN")
    shapes = {net.values[v].blob: net.values[v].shape for v in net.nodes[0].outputs}
    assert shapes == {"data": (10, 3, 321, 321), "label": (10, 1, 321, 321), "data_dim": (10, 1, 1, 2)}
