"""TFFRCNN's dialect (CharlesShang/TFFRCNN, lib/networks/*_test.py): the RPN's NHWC reshapes and
softmax, the proposal layer its network runs through tf.py_func, ROI pooling, fc layers that flatten
in C·H·W order, tf.contrib batch norm with a ReLU by default, and the values its files read from
``cfg``.  A small net in its style is checked against the arithmetic written out here, in NHWC, from
TensorFlow's and the proposal layer's definitions (TFFRCNN's base class is Python 2 and its ROI
pooling a compiled op, so TensorFlow cannot run the file itself here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from proto2torch.api import with_weights
from proto2torch.cli import main
from proto2torch.dsl import net_from_dsl
from proto2torch.errors import DSLError
from proto2torch.layers.roi import py_faster_rcnn_anchors
from proto2torch.verify import runner

TFFRCNN_STYLE = (Path(__file__).parent / "data" / "dsl" / "tffrcnn_tiny.py").read_text()
SHAPES = {"data": (1, 3, 40, 36), "im_info": (1, 3)}
DEFINES = {"cfg.ANCHOR_SCALES": "[1, 2]", "cfg.NCLASSES": "5", "cfg.TEST.RPN_MIN_SIZE": "2", "cfg.TEST.RPN_POST_NMS_TOP_N": "12"}


def _weights(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    r = lambda *shape, scale=1.0: (scale * rng.uniform(-1, 1, shape)).astype(np.float32)  # noqa: E731
    return {
        "conv1": {"weights": r(3, 3, 3, 6), "biases": r(6)},
        "conv2": {"weights": r(3, 3, 6, 8)},
        "bn2": {"gamma": r(8), "beta": r(8), "moving_mean": r(8), "moving_variance": rng.uniform(0.5, 2, 8).astype(np.float32)},
        "rpn_cls_score": {"weights": r(1, 1, 8, 12), "biases": r(12)},
        "rpn_bbox_pred": {"weights": r(1, 1, 8, 24, scale=0.4), "biases": r(24, scale=0.4)},
        "cls_score": {"weights": r(2 * 2 * 8, 5), "biases": r(5)},
    }


def _tf_conv(x: np.ndarray, w: np.ndarray, stride: int, same: bool) -> np.ndarray:
    """tf.nn.conv2d on NHWC with an HWIO kernel; SAME puts the odd padding pixel at the bottom/right."""
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    if same:
        pads = []
        for size in (t.shape[3], t.shape[2]):
            total = max((-(-size // stride) - 1) * stride + w.shape[0] - size, 0)
            pads += [total // 2, total - total // 2]
        t = torch.nn.functional.pad(t, pads)
    out = torch.nn.functional.conv2d(t, torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))), stride=stride)
    return out.permute(0, 2, 3, 1).numpy()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _proposals(prob: np.ndarray, deltas: np.ndarray, info: np.ndarray, scales, stride: int, post: int, min_size: float, irregular: bool) -> np.ndarray:
    """TFFRCNN's proposal layer on NHWC inputs: foreground scores are channels A..2A after its NCHW
    transpose; boxes from the (h, w, a)-ordered anchors and deltas, clipped, small and (with
    ``irregular``) too elongated boxes dropped, sorted, greedy NMS at IoU 0.7."""
    anchors = py_faster_rcnn_anchors(16, (0.5, 1.0, 2.0), scales).astype(np.float64)
    a = len(anchors)
    _, h, w, _ = prob.shape
    scores = prob.transpose(0, 3, 1, 2)[:, a:].transpose(0, 2, 3, 1).reshape(-1)
    sx, sy = np.meshgrid(np.arange(w) * stride, np.arange(h) * stride)
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], 1)
    boxes_in = (anchors[None] + shifts[:, None]).reshape(-1, 4)
    d = deltas.reshape(-1, 4).astype(np.float64)
    widths, heights = boxes_in[:, 2] - boxes_in[:, 0] + 1, boxes_in[:, 3] - boxes_in[:, 1] + 1
    cx, cy = d[:, 0] * widths + boxes_in[:, 0] + 0.5 * widths, d[:, 1] * heights + boxes_in[:, 1] + 0.5 * heights
    pw, ph = np.exp(d[:, 2]) * widths, np.exp(d[:, 3]) * heights
    boxes = np.stack([cx - 0.5 * pw, cy - 0.5 * ph, cx + 0.5 * pw, cy + 0.5 * ph], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, info[1] - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, info[0] - 1)
    ws, hs = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    keep = (ws >= min_size * info[2]) & (hs >= min_size * info[2])
    if irregular:
        keep &= (ws / hs <= 5) & (ws / hs >= 0.2)
    boxes, scores = boxes[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    picked: list[int] = []
    for i in range(len(boxes)):
        if len(picked) == post:
            break
        ok = True
        for j in picked:
            iw = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]) + 1
            ih = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]) + 1
            inter = max(iw, 0) * max(ih, 0)
            if inter / (area[i] + area[j] - inter) > 0.7:
                ok = False
                break
        if ok:
            picked.append(i)
    return np.concatenate([np.zeros((len(picked), 1)), boxes[picked]], 1).astype(np.float32)


def _roi_pool(x: np.ndarray, rois: np.ndarray, pooled: int, scale: float) -> np.ndarray:
    """The ROI pooling op on NHWC: rounded boxes of at least one pixel, floor/ceil bins, empty bins 0."""
    _, height, width, c = x.shape
    out = np.zeros((len(rois), pooled, pooled, c), np.float32)
    for n, (_, x1, y1, x2, y2) in enumerate(rois):
        sw, sh, ew, eh = (int(np.floor(v * scale + 0.5)) for v in (x1, y1, x2, y2))
        bh, bw = max(eh - sh + 1, 1) / pooled, max(ew - sw + 1, 1) / pooled
        for i in range(pooled):
            for j in range(pooled):
                hs, he = min(max(int(np.floor(i * bh)) + sh, 0), height), min(max(int(np.ceil((i + 1) * bh)) + sh, 0), height)
                ws, we = min(max(int(np.floor(j * bw)) + sw, 0), width), min(max(int(np.ceil((j + 1) * bw)) + sw, 0), width)
                if he > hs and we > ws:
                    out[n, i, j] = x[0, hs:he, ws:we].max((0, 1))
    return out


@pytest.mark.parametrize("backend", ["live", "source"])
def test_tffrcnn_layers_compute_what_its_network_does(backend: str, tmp_path) -> None:
    rng = np.random.default_rng(3)
    weights = _weights(rng)
    np.save(tmp_path / "w.npy", np.array(weights, dtype=object), allow_pickle=True)
    net = net_from_dsl(TFFRCNN_STYLE, "Tiny_test.py", inputs=SHAPES, defines=DEFINES)
    notes = " ".join(map(str, net.diagnostics))
    assert "dialect: tffrcnn" in notes and "cfg.TEST.RPN_PRE_NMS_TOP_N=6000" in notes
    x = rng.uniform(-1, 1, (1, 40, 36, 3)).astype(np.float32)
    info = np.array([[40, 36, 1.0]], np.float32)
    with torch.no_grad():
        blobs = runner(with_weights(net, tmp_path / "w.npy"), backend)({"data": np.ascontiguousarray(x.transpose(0, 3, 1, 2)), "im_info": info})
    got = {k: v.numpy() for k, v in blobs.items()}

    # TensorFlow's arithmetic, in NHWC
    w = weights
    y = np.maximum(_tf_conv(x, w["conv1"]["weights"], 1, True) + w["conv1"]["biases"], 0)
    y = y.reshape(1, 20, 2, 18, 2, 6).max((2, 4))  # max_pool 2x2/2 VALID
    y = _tf_conv(y, w["conv2"]["weights"], 2, True)
    bn = w["bn2"]
    y = np.maximum((y - bn["moving_mean"]) / np.sqrt(bn["moving_variance"] + 1e-3) * bn["gamma"] + bn["beta"], 0)  # relu=True by default
    score = _tf_conv(y, w["rpn_cls_score"]["weights"], 1, False) + w["rpn_cls_score"]["biases"]
    deltas = _tf_conv(y, w["rpn_bbox_pred"]["weights"], 1, False) + w["rpn_bbox_pred"]["biases"]
    n, h, wd, _ = score.shape
    prob = _softmax(score.reshape(n, h, -1, 2))  # spatial_reshape_layer(2) + spatial_softmax
    prob_reshape = prob.reshape(n, h, -1, 12)  # spatial_reshape_layer(12): back to (1, H, W, A x 2)
    rois = _proposals(prob_reshape, deltas, info[0], (1, 2), 4, 12, 2.0, irregular=True)
    assert len(rois) != len(_proposals(prob_reshape, deltas, info[0], (1, 2), 4, 12, 2.0, irregular=False)) or not np.array_equal(
        rois, _proposals(prob_reshape, deltas, info[0], (1, 2), 4, 12, 2.0, irregular=False)
    ), "the inputs should make the aspect-ratio filter matter"
    pooled = _roi_pool(y, rois, 2, 0.25)
    logits = pooled.transpose(0, 3, 1, 2).reshape(len(rois), -1) @ w["cls_score"]["weights"] + w["cls_score"]["biases"]  # C·H·W flattening

    nchw = lambda a: a.transpose(0, 3, 1, 2)  # noqa: E731
    np.testing.assert_allclose(got["bn2"], nchw(y), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["rpn_cls_score_reshape"], nchw(score.reshape(n, h, -1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["rpn_cls_prob_reshape"], nchw(prob_reshape), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["rois"], rois, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got["pool_5"], nchw(pooled), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["cls_prob"], _softmax(logits), rtol=1e-4, atol=1e-5)


def test_tffrcnn_reads_cfg_values_and_defines_override_them() -> None:
    net = net_from_dsl(TFFRCNN_STYLE, "Tiny_test.py", inputs=SHAPES)
    assert net.node("cls_score").params.num_output == 21  # TFFRCNN's cfg.NCLASSES
    assert net.node("rois").params.params.post_nms_topn == 300
    assert net.values[net.node("rpn_cls_score").outputs[0]].shape[1] == 18  # three anchor scales
    net = net_from_dsl(TFFRCNN_STYLE, "Tiny_test.py", inputs=SHAPES, defines={"cfg.NCLASSES": "81", "cfg.TEST.RPN_POST_NMS_TOP_N": "50"})
    assert net.node("cls_score").params.num_output == 81
    assert net.node("rois").params.params.post_nms_topn == 50


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("'TEST', name='rois'", "'VALID', name='rois'"), "cfg_key must be 'TEST' or 'TRAIN', got 'VALID'"),
        (("_feat_stride = [4, ]", "_feat_stride = [4, 8]"), r"_feat_stride must be one positive integer"),
        (("feed('bn2', 'rois')", "feed('bn2')"), r"roi_pool\(\) works on 2 inputs fed together but the chain feeds 1"),
        (("roi_pool(2, 2, 1.0 / 4", "roi_pool(2, 2, -1.0 / 4"), "spatial_scale must be a positive number"),
    ],
)
def test_tffrcnn_layers_refuse_bad_arguments_with_their_position(change: tuple[str, str], message: str) -> None:
    with pytest.raises(DSLError, match=r"Tiny_test\.py:\d+:\d+: .*" + message):
        net_from_dsl(TFFRCNN_STYLE.replace(*change), "Tiny_test.py", inputs=SHAPES)


def test_tffrcnn_methods_belong_to_its_dialect() -> None:
    with pytest.raises(DSLError, match=r"spatial_reshape_layer\(\) is not part of the ethereon DSL"):
        net_from_dsl(TFFRCNN_STYLE, "Tiny_test.py", inputs=SHAPES, defines=DEFINES, dialect="ethereon")


def test_cli_converts_a_tffrcnn_file(tmp_path, capsys) -> None:
    model = tmp_path / "Tiny_test.py"
    model.write_text(TFFRCNN_STYLE)
    np.save(tmp_path / "w.npy", np.array(_weights(np.random.default_rng(0)), dtype=object), allow_pickle=True)
    argv = ["convert", str(model), "--weights", str(tmp_path / "w.npy"), "--input", "data=1,3,40,36", "--input", "im_info=1,3", "-o", str(tmp_path / "out")]
    for define in ("cfg.ANCHOR_SCALES=[1,2]", "cfg.NCLASSES=5"):
        argv += ["--define", define]
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "out").exists()
