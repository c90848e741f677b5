"""Fork layers that no Caffe build at hand can run, checked against small NumPy references.

Each reference is written from the fork's C++ (or Python) source as plain loops, the way
the fork computes, independently of the PyTorch helpers under test.  Every net runs
through both back ends (the live module and the emitted source, which must agree exactly)
and the emitted module must compile with TorchScript.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from proto2torch.api import load_net, with_weights
from proto2torch.backend.live import build_graph_module, run_blobs
from proto2torch.backend.source import load_emitted, run_source_blobs

RNG = np.random.default_rng(20261122)


def rand(*shape: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def inputs_text(inputs: dict[str, np.ndarray]) -> str:
    return "".join(f'input: "{k}" input_shape {{ {" ".join(f"dim: {d}" for d in v.shape)} }}\n' for k, v in inputs.items())


def forward(tmp_path: Path, layers: str, inputs: dict[str, np.ndarray], blobs=None, options=None, script: bool = True):
    """Every blob's value from the live module, after checking the emitted source agrees.

    Inputs whose name has a dot are the extra inputs layers ask for (``<layer>.<name>``),
    not declared in the prototxt."""
    path = tmp_path / "net.prototxt"
    path.write_text(inputs_text({k: v for k, v in inputs.items() if "." not in k}) + layers)
    net = load_net(path, {k: v.shape for k, v in inputs.items()}, options=options or {})
    net = with_weights(net, blobs or {}, allow_missing=True)
    tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
    live = run_blobs(build_graph_module(net), **tensors)
    model = load_emitted(net, tmp_path / "source")
    emitted = run_source_blobs(model, net, tensors)
    for name, value in live.items():
        if name in emitted:
            assert torch.equal(torch.nan_to_num(emitted[name]), torch.nan_to_num(value)), name
    if script:
        torch.jit.script(model)
    return {k: v.numpy() for k, v in live.items()}


def c_round(v: float) -> float:
    """C's round(): halves away from zero."""
    return math.copysign(math.floor(abs(v) + 0.5), v)


# --- R-CNN family ----------------------------------------------------------------------


def roi_pool_reference(x, rois, ph, pw, scale):
    """Fast R-CNN's ROIPoolingLayer::Forward_cpu."""
    n_rois, (_, c, h, w) = len(rois), x.shape
    out = np.zeros((n_rois, c, ph, pw), np.float32)
    for r, (b, x1, y1, x2, y2) in enumerate(rois):
        sw, sh = int(c_round(x1 * scale)), int(c_round(y1 * scale))
        ew, eh = int(c_round(x2 * scale)), int(c_round(y2 * scale))
        bin_h = np.float32(max(eh - sh + 1, 1)) / np.float32(ph)
        bin_w = np.float32(max(ew - sw + 1, 1)) / np.float32(pw)
        for i in range(ph):
            for j in range(pw):
                hs = min(max(int(np.floor(np.float32(i) * bin_h)) + sh, 0), h)
                he = min(max(int(np.ceil(np.float32(i + 1) * bin_h)) + sh, 0), h)
                ws = min(max(int(np.floor(np.float32(j) * bin_w)) + sw, 0), w)
                we = min(max(int(np.ceil(np.float32(j + 1) * bin_w)) + sw, 0), w)
                if he > hs and we > ws:
                    out[r, :, i, j] = x[int(b), :, hs:he, ws:we].max(axis=(1, 2))
    return out


def psroi_pool_reference(x, rois, output_dim, group, scale):
    """R-FCN's PSROIPoolingForward kernel."""
    _, _, h, w = x.shape
    out = np.zeros((len(rois), output_dim, group, group), np.float32)
    s = np.float32(scale)
    for r, (b, x1, y1, x2, y2) in enumerate(rois):
        start_w, start_h = np.float32(c_round(x1)) * s, np.float32(c_round(y1)) * s
        end_w, end_h = np.float32(c_round(x2) + 1.0) * s, np.float32(c_round(y2) + 1.0) * s
        bin_w = max(end_w - start_w, np.float32(0.1)) / np.float32(group)
        bin_h = max(end_h - start_h, np.float32(0.1)) / np.float32(group)
        for ctop in range(output_dim):
            for i in range(group):
                for j in range(group):
                    hs = min(max(int(np.floor(np.float32(i) * bin_h + start_h)), 0), h)
                    he = min(max(int(np.ceil(np.float32(i + 1) * bin_h + start_h)), 0), h)
                    ws = min(max(int(np.floor(np.float32(j) * bin_w + start_w)), 0), w)
                    we = min(max(int(np.ceil(np.float32(j + 1) * bin_w + start_w)), 0), w)
                    if he > hs and we > ws:
                        channel = (ctop * group + i) * group + j
                        out[r, ctop, i, j] = x[int(b), channel, hs:he, ws:we].sum() / ((he - hs) * (we - ws))
    return out


ROIS = np.array(
    [[0, 0, 0, 63, 47], [1, 10.5, 3.5, 40.5, 30.5], [0, 33, 17, 35, 18], [1, -8, -8, 90, 70], [0, 60, 40, 20, 10]], np.float32
)


def test_roi_pooling(tmp_path) -> None:
    x, rois = rand(2, 3, 6, 8), ROIS
    layers = 'layer { name: "pool" type: "ROIPooling" bottom: "x" bottom: "rois" top: "pool" roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.125 } }'
    out = forward(tmp_path, layers, {"x": x, "rois": rois})
    np.testing.assert_array_equal(out["pool"], roi_pool_reference(x, rois, 3, 2, 0.125))


def test_psroi_pooling(tmp_path) -> None:
    x, rois = rand(2, 2 * 9, 6, 8), ROIS
    layers = 'layer { name: "ps" type: "PSROIPooling" bottom: "x" bottom: "rois" top: "ps" psroi_pooling_param { spatial_scale: 0.125 output_dim: 2 group_size: 3 } }'
    out = forward(tmp_path, layers, {"x": x, "rois": rois})
    np.testing.assert_allclose(out["ps"], psroi_pool_reference(x, rois, 2, 3, 0.125), rtol=1e-5, atol=1e-6)


def py_faster_rcnn_anchors(base=16, ratios=(0.5, 1, 2), scales=(8, 16, 32)):
    """lib/rpn/generate_anchors.py."""

    def whctrs(a):
        w, h = a[2] - a[0] + 1, a[3] - a[1] + 1
        return w, h, a[0] + 0.5 * (w - 1), a[1] + 0.5 * (h - 1)

    def mk(ws, hs, xc, yc):
        ws, hs = np.asarray(ws)[:, None], np.asarray(hs)[:, None]
        return np.hstack((xc - 0.5 * (ws - 1), yc - 0.5 * (hs - 1), xc + 0.5 * (ws - 1), yc + 0.5 * (hs - 1)))

    w, h, xc, yc = whctrs(np.array([1, 1, base, base]) - 1)
    size = w * h
    ws = np.round(np.sqrt(size / np.array(ratios)))
    hs = np.round(ws * np.array(ratios))
    ratio_anchors = mk(ws, hs, xc, yc)
    out = []
    for a in ratio_anchors:
        w, h, xc, yc = whctrs(a)
        out.append(mk(w * np.array(scales), h * np.array(scales), xc, yc))
    return np.vstack(out)


def py_proposals(scores, deltas, im_info, stride, pre, post, thresh, min_size, anchors):
    """lib/rpn/proposal_layer.py forward (one image), with its nms.py."""
    a = anchors.shape[0]
    h, w = scores.shape[2:]
    sx, sy = np.meshgrid(np.arange(w) * stride, np.arange(h) * stride)
    shifts = np.vstack((sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel())).T
    all_anchors = (anchors[None] + shifts[:, None]).reshape(-1, 4)
    d = deltas[0].transpose(1, 2, 0).reshape(-1, 4)
    fg = scores[0, a:].transpose(1, 2, 0).reshape(-1)
    widths = all_anchors[:, 2] - all_anchors[:, 0] + 1.0
    heights = all_anchors[:, 3] - all_anchors[:, 1] + 1.0
    cx, cy = all_anchors[:, 0] + 0.5 * widths, all_anchors[:, 1] + 0.5 * heights
    pcx, pcy = d[:, 0] * widths + cx, d[:, 1] * heights + cy
    pw, ph = np.exp(d[:, 2]) * widths, np.exp(d[:, 3]) * heights
    boxes = np.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], 1)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, im_info[1] - 1)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, im_info[0] - 1)
    keep = np.where((boxes[:, 2] - boxes[:, 0] + 1 >= min_size * im_info[2]) & (boxes[:, 3] - boxes[:, 1] + 1 >= min_size * im_info[2]))[0]
    boxes, fg = boxes[keep], fg[keep]
    order = fg.argsort()[::-1][:pre]
    boxes, fg = boxes[order], fg[order]
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    todo, kept = np.arange(len(fg)), []
    while todo.size:
        i = todo[0]
        kept.append(i)
        iw = np.maximum(0.0, np.minimum(x2[i], x2[todo[1:]]) - np.maximum(x1[i], x1[todo[1:]]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[todo[1:]]) - np.maximum(y1[i], y1[todo[1:]]) + 1)
        inter = iw * ih
        todo = todo[1:][inter / (areas[i] + areas[todo[1:]] - inter) <= thresh]
    kept = kept[:post]
    return np.hstack([np.zeros((len(kept), 1)), boxes[kept]]), fg[kept][:, None]


def test_py_faster_rcnn_proposal_layer(tmp_path) -> None:
    scores = rand(1, 18, 5, 7, lo=0.0, hi=1.0)
    deltas = rand(1, 36, 5, 7, lo=-0.3, hi=0.3)
    im_info = np.array([[70, 100, 1.0]], np.float32)
    layers = """layer { name: "proposal" type: "Python" bottom: "scores" bottom: "deltas" bottom: "im_info" top: "rois" top: "roi_scores"
      python_param { module: "rpn.proposal_layer" layer: "ProposalLayer" param_str: "'feat_stride': 16" } }"""
    out = forward(tmp_path, layers, {"scores": scores, "deltas": deltas, "im_info": im_info}, script=False)
    rois, roi_scores = py_proposals(scores, deltas, im_info[0], 16, 6000, 300, 0.7, 16, py_faster_rcnn_anchors())
    assert out["rois"].shape == rois.shape and len(rois) > 5
    np.testing.assert_allclose(out["rois"], rois, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(out["roi_scores"], roi_scores, rtol=1e-6)


def test_pvanet_proposal_keeps_small_boxes_with_score_zero(tmp_path) -> None:
    """Caffe's C++ Proposal (pva-faster-rcnn) zeroes the score of a too-small box instead of dropping it."""
    scores = rand(1, 2, 2, 2, lo=0.5, hi=1.0)
    deltas = np.zeros((1, 4, 2, 2), np.float32)
    deltas[0, 2:, 0, 0] = -3.0  # the first anchor shrinks to about 1/20 of its size
    im_info = np.array([[64, 64, 1, 1]], np.float32)
    layers = """layer { name: "proposal" type: "Proposal" bottom: "scores" bottom: "deltas" bottom: "im_info" top: "rois" top: "roi_scores"
      proposal_param { ratio: 1 scale: 1 base_size: 16 feat_stride: 16 min_size: 4 pre_nms_topn: 10 post_nms_topn: 10 nms_thresh: 0.7 } }"""
    out = forward(tmp_path, layers, {"scores": scores, "deltas": deltas, "im_info": im_info})
    assert out["rois"].shape == (4, 5)
    small = np.where(out["rois"][:, 3] - out["rois"][:, 1] + 1 < 4)[0]
    assert len(small) == 1 and out["roi_scores"][small[0]] == 0 and small[0] == 3  # sorted last
    np.testing.assert_array_equal(np.sort(out["roi_scores"][:3])[::-1], np.sort(scores[0, 1].ravel()[1:])[::-1])


def test_box_annotator_ohem_keeps_the_hardest_rois_of_each_image(tmp_path) -> None:
    rois = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 2, 2], [1, 0, 0, 3, 3], [0, 1, 1, 4, 4], [1, 2, 2, 5, 5]], np.float32)
    loss = np.array([0.5, 2.0, 0.1, 1.0, 0.3], np.float32)
    labels = np.array([1, 2, 3, 4, 5], np.float32)
    weights = rand(5, 8)
    layers = """layer { name: "ohem" type: "BoxAnnotatorOHEM" bottom: "rois" bottom: "loss" bottom: "labels" bottom: "weights"
      top: "kept_labels" top: "kept_weights" box_annotator_ohem_param { roi_per_img: 1 ignore_label: -1 } }"""
    out = forward(tmp_path, layers, {"rois": rois, "loss": loss, "labels": labels, "weights": weights})
    np.testing.assert_array_equal(out["kept_labels"], [-1, 2, -1, -1, 5])
    np.testing.assert_array_equal(out["kept_weights"], weights * np.array([0, 1, 0, 0, 1], np.float32)[:, None])


# --- losses and metrics of forks ---------------------------------------------------------


def test_smooth_l1_loss_fast_rcnn_with_sigma_and_weights(tmp_path) -> None:
    pred, target, inside, outside = rand(3, 8), rand(3, 8), rand(3, 8, lo=0, hi=1), rand(3, 8, lo=0, hi=1)
    layers = """layer { name: "l" type: "SmoothL1Loss" bottom: "pred" bottom: "target" bottom: "inside" bottom: "outside" top: "l"
      smooth_l1_loss_param { sigma: 3 } }"""
    out = forward(tmp_path, layers, {"pred": pred, "target": target, "inside": inside, "outside": outside})
    d = inside.astype(np.float64) * (pred - target)
    s2 = 9.0
    e = np.where(np.abs(d) < 1 / s2, 0.5 * s2 * d * d, np.abs(d) - 0.5 / s2) * outside
    np.testing.assert_allclose(out["l"], e.sum() / 3, rtol=1e-5)


def test_ohem_losses_give_each_instance_its_loss(tmp_path) -> None:
    x, label = rand(4, 3, 2, 2), RNG.integers(0, 3, (4, 1, 2, 2)).astype(np.float32)
    label[0, 0, 0, 0] = -1
    pred, target = rand(4, 8, 2, 2), rand(4, 8, 2, 2)
    layers = """layer { name: "cls" type: "SoftmaxWithLossOHEM" bottom: "x" bottom: "label" top: "cls" top: "prob" top: "per_roi"
      loss_param { ignore_label: -1 } }
    layer { name: "box" type: "SmoothL1LossOHEM" bottom: "pred" bottom: "target" top: "box" top: "box_per_roi" }"""
    out = forward(tmp_path, layers, {"x": x, "label": label, "pred": pred, "target": target})
    prob = np.exp(x - x.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    picked = np.take_along_axis(prob, np.maximum(label, 0).astype(int), 1)
    per = np.where(label == -1, 0.0, -np.log(picked))
    np.testing.assert_allclose(out["per_roi"], per, rtol=1e-5)
    np.testing.assert_allclose(out["cls"], per.sum() / 15, rtol=1e-5)
    d = pred.astype(np.float64) - target
    e = np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5)
    np.testing.assert_allclose(out["box_per_roi"], e.sum(1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(out["box"], e.sum() / 16, rtol=1e-5)  # VALID: every one of N x H x W positions


def test_center_loss(tmp_path) -> None:
    x, label, centers = rand(5, 4), np.array([0, 2, 2, 1, 0], np.float32), rand(3, 4)
    layers = 'layer { name: "center" type: "CenterLoss" bottom: "x" bottom: "label" top: "center" center_loss_param { num_output: 3 } }'
    out = forward(tmp_path, layers, {"x": x, "label": label}, {"center": [centers]})
    np.testing.assert_allclose(out["center"], ((x - centers[label.astype(int)]) ** 2).sum() / 5 / 2, rtol=1e-5)


def test_seg_accuracy(tmp_path) -> None:
    x = rand(2, 3, 4, 5)
    label = RNG.integers(0, 3, (2, 1, 4, 5)).astype(np.float32)
    label[0, 0, :2] = 255
    layers = 'layer { name: "acc" type: "SegAccuracy" bottom: "x" bottom: "label" top: "acc" seg_accuracy_param { ignore_label: 255 } }'
    out = forward(tmp_path, layers, {"x": x, "label": label}, script=False)
    pred, truth = x.argmax(1).ravel(), label.ravel().astype(int)
    valid = truth != 255
    confusion = np.zeros((3, 3))
    for t, p in zip(truth[valid], pred[valid]):
        confusion[t, p] += 1
    accuracy = np.trace(confusion) / confusion.sum()
    rows, cols, diag = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    recall = np.mean([diag[c] / rows[c] for c in range(3) if rows[c] > 0])
    jaccard = np.mean([diag[c] / (rows[c] + cols[c] - diag[c]) if rows[c] + cols[c] - diag[c] else 1.0 for c in range(3)])
    np.testing.assert_allclose(out["acc"].ravel(), [accuracy, recall, jaccard], rtol=1e-6)


def test_euclidean_loss_heatmap_skips_missing_joints(tmp_path) -> None:
    pred, target = rand(2, 3, 4, 4), rand(2, 3, 4, 4)
    target[1, 2] = -999.0
    layers = 'layer { name: "l" type: "EuclideanLossHeatmap" bottom: "pred" bottom: "target" top: "l" }'
    out = forward(tmp_path, layers, {"pred": pred, "target": target})
    d = np.where(target == -999.0, 0.0, pred.astype(np.float64) - target)
    np.testing.assert_allclose(out["l"], (d * d).sum() / pred.size, rtol=1e-5)


def test_margin_inner_product_quadruple_margin(tmp_path) -> None:
    x, label, weight = rand(4, 5), np.array([0, 3, 1, 3], np.float32), rand(4, 5)
    layers = """layer { name: "fc" type: "MarginInnerProduct" bottom: "x" bottom: "label" top: "fc" top: "lambda"
      margin_inner_product_param { num_output: 4 type: QUADRUPLE base: 1000 gamma: 0.12 power: 1 lambda_min: 5 iteration: 0 } }"""
    out = forward(tmp_path, layers, {"x": x, "label": label}, {"fc": [weight]})
    lam = max(1000.0 * (1 + 0.12 * 1) ** -1, 5.0)  # the value of the first forward pass
    w = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    logits = x.astype(np.float64) @ w.T
    norm = np.linalg.norm(x, axis=1)
    for i, y in enumerate(label.astype(int)):
        theta = math.acos(np.clip(logits[i, y] / norm[i], -1, 1))
        k = math.floor(4 * theta / math.pi)  # psi(theta) = (-1)^k cos(4 theta) - 2k
        psi = (-1) ** k * math.cos(4 * theta) - 2 * k
        logits[i, y] = (norm[i] * psi + lam * logits[i, y]) / (1 + lam)
    np.testing.assert_allclose(out["fc"], logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["lambda"], [lam], rtol=1e-6)


@pytest.mark.parametrize("phase, transform_test, applied", [("TEST", False, False), ("TEST", True, True), ("TRAIN", False, True)])
def test_label_specific_add(tmp_path, phase: str, transform_test: bool, applied: bool) -> None:
    x, label = rand(3, 4), np.array([1, 0, 3], np.float32)
    x[2, 3] = 0.5  # not above -bias = 0.35: unchanged
    layers = f"""layer {{ name: "m" type: "LabelSpecificAdd" bottom: "x" bottom: "label" top: "m" top: "bias"
      label_specific_add_param {{ bias: -0.35 transform_test: {str(transform_test).lower()} }} }}"""
    out = forward(tmp_path, layers, {"x": x, "label": label}, options={"phase": phase})
    want = x.copy()
    if applied:
        for i, y in enumerate(label.astype(int)):
            if want[i, y] > 0.35:
                want[i, y] -= 0.35
    np.testing.assert_allclose(out["m"], want, rtol=1e-6)
    np.testing.assert_allclose(out["bias"], [-0.35 if applied else 0.0], rtol=1e-6)


def test_infogain_loss_softmax_form(tmp_path) -> None:
    x, label, h = rand(3, 4, 2), RNG.integers(0, 4, (3, 2)).astype(np.float32), rand(4, 4, lo=0, hi=1)
    label[1, 1] = 5
    layers = """layer { name: "l" type: "InfogainLoss" bottom: "x" bottom: "label" bottom: "h" top: "l" top: "p"
      loss_param { ignore_label: 5 normalization: VALID } }"""
    out = forward(tmp_path, layers, {"x": x, "label": label, "h": h})
    prob = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    total, valid = 0.0, 0
    for i in range(3):
        for j in range(2):
            if label[i, j] == 5:
                continue
            total -= sum(h[int(label[i, j]), c] * math.log(max(prob[i, c, j], 1e-20)) for c in range(4))
            valid += 1
    np.testing.assert_allclose(out["l"], total / valid, rtol=1e-5)
    np.testing.assert_allclose(out["p"], prob, rtol=1e-5)


def test_infogain_loss_reads_its_matrix_file_as_an_input(tmp_path) -> None:
    x, label = rand(3, 4, lo=0.1, hi=1), np.array([0, 3, 1], np.float32)
    layers = 'layer { name: "l" type: "InfogainLoss" bottom: "x" bottom: "label" top: "l" infogain_loss_param { source: "H.binaryproto" } }'
    h = np.eye(4, dtype=np.float32)
    out = forward(tmp_path, layers, {"x": x, "label": label, "l.infogain": h}, options={"InfogainLoss": "probabilities"})
    np.testing.assert_allclose(out["l"], -np.log(x[[0, 1, 2], [0, 3, 1]]).sum() / 3, rtol=1e-5)


# --- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pspnet", "tsn"])
def test_bn_stored_statistics(tmp_path, kind: str) -> None:
    x = rand(2, 3, 4, 5)
    slope, bias, mean, stat = rand(1, 3, 1, 1), rand(1, 3, 1, 1), rand(1, 3, 1, 1), rand(1, 3, 1, 1, lo=0.5, hi=2)
    blobs = [slope, bias, mean, stat] if kind == "pspnet" else [b.reshape(1, 3) for b in (slope, bias, mean, stat)]
    layers = 'layer { name: "bn" type: "BN" bottom: "x" top: "bn" bn_param { eps: 0.001 } }'
    out = forward(tmp_path, layers, {"x": x}, {"bn": blobs}, options={"BN": kind})
    inv = 1 / np.sqrt(stat + 0.001) if kind == "pspnet" else stat
    np.testing.assert_allclose(out["bn"], slope * (x - mean) * inv + bias, rtol=1e-5, atol=1e-6)


def test_bn_pspnet_training_uses_batch_statistics(tmp_path) -> None:
    x = rand(2, 3, 4, 5)
    blobs = [rand(1, 3, 1, 1), rand(1, 3, 1, 1), rand(1, 3, 1, 1), rand(1, 3, 1, 1, lo=0.5, hi=2)]
    layers = 'layer { name: "bn" type: "BN" bottom: "x" top: "bn" bn_param { eps: 0.001 } }'
    out = forward(tmp_path, layers, {"x": x}, {"bn": blobs}, options={"phase": "TRAIN"})
    mean, var = x.mean((0, 2, 3), keepdims=True), x.var((0, 2, 3), keepdims=True)
    np.testing.assert_allclose(out["bn"], blobs[0] * (x - mean) / np.sqrt(var + 0.001) + blobs[1], rtol=1e-4, atol=1e-5)


def test_bn_segnet_modes(tmp_path) -> None:
    x, scale, shift = rand(2, 3, 4, 5), rand(1, 3, 1, 1), rand(1, 3, 1, 1)
    layers = """layer { name: "learn" type: "BN" bottom: "x" top: "learn" top: "mean" top: "var" bn_param { bn_mode: LEARN } }
    layer { name: "infer" type: "BN" bottom: "x" top: "infer" bn_param { bn_mode: INFERENCE } }"""
    out = forward(tmp_path, layers, {"x": x}, {"learn": [scale, shift], "infer": [scale, shift]})
    mean = x.mean((0, 2, 3), keepdims=True)
    var = (x * x).mean((0, 2, 3), keepdims=True) - mean * mean
    np.testing.assert_allclose(out["learn"], scale * (x - mean) / np.sqrt(var + 1e-9) + shift, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["mean"], mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["var"], var, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out["infer"], scale * x + shift, rtol=1e-6)


def test_nvidia_batchnorm_with_scale_bias(tmp_path) -> None:
    x, mean, var, scale, bias = rand(2, 3, 4, 4), rand(3), rand(3, lo=0.5, hi=2), rand(3), rand(3)
    layers = 'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "bn" batch_norm_param { scale_bias: true eps: 1e-7 } }'
    out = forward(tmp_path, layers, {"x": x}, {"bn": [mean * 2, var * 2, np.array([2], np.float32), scale, bias]})
    c = (1, 3, 1, 1)
    want = (x - mean.reshape(c)) / np.sqrt(var.reshape(c) + 1e-5) * scale.reshape(c) + bias.reshape(c)  # eps floored at 1e-5
    np.testing.assert_allclose(out["bn"], want, rtol=1e-5, atol=1e-6)


def test_happynear_normalize_and_channel_scale(tmp_path) -> None:
    x, scale = rand(3, 4, 2, 2), rand(3, 1, 2, 2)
    layers = """layer { name: "norm" type: "Normalize" bottom: "x" top: "norm" top: "length" normalize_param { normalize_type: "L2" } }
    layer { name: "l1" type: "Normalize" bottom: "x" top: "l1" normalize_param { normalize_type: "L1" } }
    layer { name: "scaled" type: "ChannelScale" bottom: "norm" bottom: "scale" top: "scaled" }
    layer { name: "global" type: "ChannelScale" bottom: "norm" top: "global" top: "s" channel_scale_param { global_scale: true max_global_scale: 20 } }"""
    out = forward(tmp_path, layers, {"x": x, "scale": scale}, {"global": [np.array([25.0], np.float32)]})
    length = np.sqrt((x * x).sum(1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(out["norm"], x / length, rtol=1e-5)
    np.testing.assert_allclose(out["length"], length, rtol=1e-5)
    np.testing.assert_allclose(out["l1"], x / (np.abs(x).sum(1, keepdims=True) + 1e-6), rtol=1e-5)
    np.testing.assert_allclose(out["scaled"], x / length * scale, rtol=1e-5)
    np.testing.assert_allclose(out["global"], x / length * 20, rtol=1e-5)  # clamped to max_global_scale
    np.testing.assert_array_equal(out["s"], [20.0])


def test_happynear_inner_product_normalizes_weight_rows(tmp_path) -> None:
    x, weight = rand(2, 6), rand(3, 6)
    layers = 'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "fc" inner_product_param { num_output: 3 normalize: true bias_term: false } }'
    out = forward(tmp_path, layers, {"x": x}, {"fc": [weight]})
    np.testing.assert_allclose(out["fc"], x @ (weight / np.sqrt((weight**2).sum(1, keepdims=True) + 1e-6)).T, rtol=1e-5, atol=1e-6)


# --- shapes and element-wise ----------------------------------------------------------------


def test_shuffle_axpy_flip_reverse_transpose(tmp_path) -> None:
    x, a, y, t = rand(2, 6, 3, 4), rand(2, 6, 1, 1), rand(2, 6, 3, 4), rand(5, 2, 3)
    layers = """layer { name: "shuffle" type: "ShuffleChannel" bottom: "x" top: "shuffle" shuffle_channel_param { group: 3 } }
    layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "axpy" }
    layer { name: "flip" type: "Flip" bottom: "x" top: "flip" flip_param { flip_width: true flip_height: true } }
    layer { name: "rev" type: "Reverse" bottom: "t" top: "rev" reverse_param { axis: 0 } }
    layer { name: "tr" type: "Transpose" bottom: "t" top: "tr" transpose_param { dim: 1 dim: 2 dim: 0 } }"""
    out = forward(tmp_path, layers, {"x": x, "a": a, "y": y, "t": t})
    shuffled = np.empty_like(x)
    for c in range(6):  # output channel c takes input channel (c % group) * (C / group) + c // group
        shuffled[:, c] = x[:, (c % 3) * 2 + c // 3]
    np.testing.assert_array_equal(out["shuffle"], shuffled)
    np.testing.assert_allclose(out["axpy"], a * x + y, rtol=1e-6)
    np.testing.assert_array_equal(out["flip"], x[:, :, ::-1, ::-1])
    np.testing.assert_array_equal(out["rev"], t[::-1])
    np.testing.assert_array_equal(out["tr"], t.transpose(1, 2, 0))


def test_fork_activations_and_dropouts(tmp_path) -> None:
    x = rand(2, 3, 4, lo=-8, hi=8)
    layers = """layer { name: "selu" type: "SeLu" bottom: "x" top: "selu" selu_param { alpha: 1.5 lambda: 1.1 } }
    layer { name: "hs" type: "HardSigmoid" bottom: "x" top: "hs" hardsigmoid_param { alpha: 0.1 beta: 0.4 } }
    layer { name: "relu6" type: "ReLU6" bottom: "x" top: "relu6" relu6_param { negative_slope: 0.1 threshold: 5 } }
    layer { name: "drop" type: "Dropout" bottom: "x" top: "drop" dropout_param { dropout_ratio: 0.3 scale_train: false } }
    layer { name: "sdrop" type: "SeLuDropout" bottom: "x" top: "sdrop" selu_dropout_param { dropout_ratio: 0.2 } }
    layer { name: "spatial" type: "Python" bottom: "x" top: "spatial" python_param { module: "spatial_dropout" layer: "SpatialDropoutLayer" param_str: "{'p': '0.25'}" } }"""
    out = forward(tmp_path, layers, {"x": x})
    np.testing.assert_allclose(out["selu"], 1.1 * np.where(x > 0, x, 1.5 * (np.exp(x) - 1)), rtol=1e-5)
    np.testing.assert_allclose(out["hs"], np.clip(0.1 * x + 0.4, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(out["relu6"], np.minimum(np.maximum(x, 0) + 0.1 * np.minimum(x, 0), 5), rtol=1e-6)
    np.testing.assert_allclose(out["drop"], x * 0.7, rtol=1e-6)  # caffe-fast-rcnn: scaled at test time instead
    np.testing.assert_array_equal(out["sdrop"], x)
    np.testing.assert_allclose(out["spatial"], x / 0.75, rtol=1e-6)  # ENet's layer scales by 1 / (1 - p) at test time too


def test_deeplab_hole_is_dilation(tmp_path) -> None:
    x, w = rand(1, 2, 9, 9), rand(3, 2, 3, 3)
    layers = """layer { name: "hole" type: "Convolution" bottom: "x" top: "hole" convolution_param { num_output: 3 kernel_size: 3 hole: 2 bias_term: false } }
    layer { name: "dil" type: "Convolution" bottom: "x" top: "dil" convolution_param { num_output: 3 kernel_size: 3 dilation: 2 bias_term: false } }"""
    out = forward(tmp_path, layers, {"x": x}, {"hole": [w], "dil": [w]})
    assert out["hole"].shape == (1, 3, 5, 5)
    np.testing.assert_array_equal(out["hole"], out["dil"])


# --- spatial ---------------------------------------------------------------------------------


def psa_reference(x, attention, collect, softmax, norm, mask_h, mask_w):
    """PSANet's PointwiseSpatialAttentionLayer::Forward_cpu (mask buffer, softmax over axis 1, GEMM)."""
    n, c, h, w = x.shape
    half_h, half_w = (mask_h - 1) // 2, (mask_w - 1) // 2
    out = np.zeros_like(x, dtype=np.float64)
    for b in range(n):
        buffer = np.zeros((h * w, h * w))
        for i in range(h):
            for j in range(w):
                for hi in range(max(0, half_h - i), min(mask_h, h + half_h - i)):
                    for wi in range(max(0, half_w - j), min(mask_w, w + half_w - j)):
                        other = (hi + i - half_h) * w + (wi + j - half_w)
                        value = attention[b, hi * mask_w + wi, i, j]
                        if collect:
                            buffer[other, i * w + j] = value
                        else:
                            buffer[i * w + j, other] = value
        if softmax:
            buffer = np.exp(buffer - buffer.max(0, keepdims=True))
            buffer /= buffer.sum(0, keepdims=True)
        out[b] = (x[b].reshape(c, h * w) @ buffer / norm).reshape(c, h, w)
    return out


@pytest.mark.parametrize("psa_type, softmax", [("COLLECT", True), ("DISTRIBUTE", False)])
def test_pointwise_spatial_attention(tmp_path, psa_type: str, softmax: bool) -> None:
    x, attention = rand(2, 3, 4, 5), rand(2, 7 * 9, 4, 5)
    layers = f"""layer {{ name: "psa" type: "PointwiseSpatialAttention" bottom: "x" bottom: "att" top: "psa"
      pointwise_spatial_attention_param {{ psa_type: {psa_type} is_softmax: {str(softmax).lower()} normalization_factor: 2.0 }} }}"""
    out = forward(tmp_path, layers, {"x": x, "att": attention})
    want = psa_reference(x, attention, psa_type == "COLLECT", softmax, 2.0, 7, 9)
    np.testing.assert_allclose(out["psa"], want, rtol=1e-4, atol=1e-6)


def test_flow_warp(tmp_path) -> None:
    image, flow = rand(1, 2, 5, 6), rand(1, 2, 5, 6, lo=-2, hi=2)
    layers = 'layer { name: "warp" type: "FlowWarp" bottom: "image" bottom: "flow" top: "warp" }'
    out = forward(tmp_path, layers, {"image": image, "flow": flow})
    want = np.zeros_like(image)
    for y in range(5):
        for x in range(6):
            fx, fy = x + flow[0, 0, y, x], y + flow[0, 1, y, x]
            if not (0 <= fx < 6 and 0 <= fy < 5):
                continue
            left, top = int(fx), int(fy)
            right, bottom = min(left + 1, 5), min(top + 1, 4)
            a, b = fx - left, fy - top
            want[0, :, y, x] = (
                (1 - a) * (1 - b) * image[0, :, top, left] + a * (1 - b) * image[0, :, top, right]
                + (1 - a) * b * image[0, :, bottom, left] + a * b * image[0, :, bottom, right]
            )
    np.testing.assert_allclose(out["warp"], want, rtol=1e-5, atol=1e-6)


def test_color_conv_rgb_to_lab_known_colours(tmp_path) -> None:
    rgb = np.zeros((1, 3, 1, 4), np.float32)
    rgb[0, :, 0, 0] = (255, 255, 255)
    rgb[0, :, 0, 1] = (0, 0, 0)
    rgb[0, :, 0, 2] = (255, 0, 0)
    rgb[0, :, 0, 3] = (0, 0, 255)
    layers = 'layer { name: "lab" type: "ColorConv" bottom: "rgb" top: "lab" color_conv_param { input: RGB output: Lab } }'
    out = forward(tmp_path, layers, {"rgb": rgb})
    # CIE L*a*b* (D65) of sRGB white, black, red and blue
    want = np.array([[100, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20], [32.30, 79.19, -107.86]], np.float32).T
    np.testing.assert_allclose(out["lab"][0, :, 0], want, atol=0.05)


# --- C3D -------------------------------------------------------------------------------------


def conv3d_reference(x, w, b, stride, pad):
    n, c, frames, h, wd = x.shape
    kd, k = w.shape[2], w.shape[3]
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (pad[1], pad[1])))
    out_l, out_h, out_w = ((frames + 2 * pad[0] - kd) // stride[0] + 1, (h + 2 * pad[1] - k) // stride[1] + 1, (wd + 2 * pad[1] - k) // stride[1] + 1)
    out = np.zeros((n, w.shape[0], out_l, out_h, out_w))
    for t in range(out_l):
        for i in range(out_h):
            for j in range(out_w):
                patch = xp[:, :, t * stride[0] : t * stride[0] + kd, i * stride[1] : i * stride[1] + k, j * stride[1] : j * stride[1] + k]
                out[:, :, t, i, j] = np.einsum("ncdhw,ocdhw->no", patch, w) + b
    return out


def test_c3d_convolution_pooling_and_deconvolution(tmp_path) -> None:
    x, w, b = rand(1, 2, 5, 6, 6), rand(3, 2, 3, 3, 3), rand(3)
    layers = """layer { name: "conv" type: "Convolution3D" bottom: "x" top: "conv"
      convolution3d_param { num_output: 3 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1 stride: 2 temporal_stride: 1 } }
    layer { name: "max" type: "Pooling3D" bottom: "x" top: "max" pooling3d_param { pool: MAX kernel_size: 2 kernel_depth: 2 stride: 2 temporal_stride: 2 } }
    layer { name: "ave" type: "Pooling3D" bottom: "x" top: "ave" pooling3d_param { pool: AVE kernel_size: 3 kernel_depth: 2 stride: 2 temporal_stride: 2 pad: 1 } }
    layer { name: "up" type: "Deconvolution3D" bottom: "conv" top: "up"
      convolution3d_param { num_output: 2 kernel_size: 2 kernel_depth: 1 stride: 2 temporal_stride: 1 bias_term: false } }"""
    up_w = rand(3, 2, 1, 2, 2)
    out = forward(tmp_path, layers, {"x": x}, {"conv": [w, b], "up": [up_w]})
    np.testing.assert_allclose(out["conv"], conv3d_reference(x, w, b, (1, 2), (1, 1)), rtol=1e-4, atol=1e-5)
    # MAX: windows rounded up, clipped to the input, no padding
    assert out["max"].shape == (1, 2, 3, 3, 3)
    for t in range(3):
        for i in range(3):
            for j in range(3):
                want = x[:, :, 2 * t : 2 * t + 2, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(2, 3, 4))
                np.testing.assert_array_equal(out["max"][:, :, t, i, j], want)
    # AVE: spatial padding 1, divided by the window clipped to the padded input
    xp = np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 1), (1, 1)))
    assert out["ave"].shape == (1, 2, 3, 4, 4)
    for t in range(3):
        for i in range(4):
            for j in range(4):
                window = xp[:, :, 2 * t : 2 * t + 2, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
                np.testing.assert_allclose(out["ave"][:, :, t, i, j], window.sum(axis=(2, 3, 4)) / np.prod(window.shape[2:]), rtol=1e-5, atol=1e-6)
    # the transposed convolution scatters each input pixel into a 2 x 2 block
    conv = out["conv"]
    want = np.zeros((1, 2, conv.shape[2], 2 * conv.shape[3], 2 * conv.shape[4]))
    for i in range(conv.shape[3]):
        for j in range(conv.shape[4]):
            want[:, :, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2] += np.einsum("nct,cohw->nothw", conv[:, :, :, i, j], up_w[:, :, 0])
    np.testing.assert_allclose(out["up"], want, rtol=1e-4, atol=1e-5)


# --- recurrent -------------------------------------------------------------------------------


def test_junhyuk_lstm_with_clip(tmp_path) -> None:
    steps, n, size, hidden = 4, 2, 3, 5
    x, clip = rand(steps * n, size), np.array([0, 0, 1, 1, 0, 1, 1, 1], np.float32)
    wi, wh, b = rand(4 * hidden, size), rand(4 * hidden, hidden), rand(4 * hidden)
    layers = 'layer { name: "lstm" type: "Lstm" bottom: "x" bottom: "clip" top: "lstm" lstm_param { num_output: 5 batch_size: 2 } }'
    out = forward(tmp_path, layers, {"x": x, "clip": clip}, {"lstm": [wi, wh, b]})

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    h, c, want = np.zeros((n, hidden)), np.zeros((n, hidden)), []
    for t in range(steps):
        keep = clip[t * n : (t + 1) * n, None]
        gates = x[t * n : (t + 1) * n] @ wi.T + b + keep * (h @ wh.T)
        i, f, o, g = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
        c = keep * sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        want.append(h)
    np.testing.assert_allclose(out["lstm"], np.concatenate(want), rtol=1e-4, atol=1e-6)


# --- resizing ---------------------------------------------------------------------------------


def bilinear_align_corners(x, out_h, out_w):
    _, _, h, w = x.shape
    out = np.zeros(x.shape[:2] + (out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            y = i * (h - 1) / (out_h - 1) if out_h > 1 else 0.0
            v = j * (w - 1) / (out_w - 1) if out_w > 1 else 0.0
            y0, v0 = int(y), int(v)
            y1, v1 = min(y0 + 1, h - 1), min(v0 + 1, w - 1)
            a, b = y - y0, v - v0
            out[:, :, i, j] = (1 - a) * ((1 - b) * x[:, :, y0, v0] + b * x[:, :, y0, v1]) + a * ((1 - b) * x[:, :, y1, v0] + b * x[:, :, y1, v1])
    return out


def test_interp_zoom_shrink_and_size(tmp_path) -> None:
    x = rand(1, 2, 5, 7)
    layers = """layer { name: "zoom" type: "Interp" bottom: "x" top: "zoom" interp_param { zoom_factor: 3 } }
    layer { name: "shrink" type: "Interp" bottom: "x" top: "shrink" interp_param { shrink_factor: 2 } }
    layer { name: "sized" type: "Interp" bottom: "x" top: "sized" interp_param { height: 4 width: 11 } }"""
    out = forward(tmp_path, layers, {"x": x})
    assert out["zoom"].shape == (1, 2, 13, 19) and out["shrink"].shape == (1, 2, 3, 4)
    for name, (h, w) in (("zoom", (13, 19)), ("shrink", (3, 4)), ("sized", (4, 11))):
        np.testing.assert_allclose(out[name], bilinear_align_corners(x, h, w), rtol=1e-5, atol=1e-6)


def test_upsample_variants(tmp_path) -> None:
    x = rand(1, 2, 2, 3)
    pooled, mask = rand(1, 2, 2, 2), np.array([[[[0, 3], [9, 14]], [[1, 6], [12, 15]]]], np.float32)
    layers = """layer { name: "nearest" type: "Upsample" bottom: "x" top: "nearest" upsample_param { scale: 2 } }"""
    out = forward(tmp_path, layers, {"x": x})
    np.testing.assert_array_equal(out["nearest"], x.repeat(2, 2).repeat(2, 3))
    layers = """layer { name: "unpool" type: "Upsample" bottom: "pooled" bottom: "mask" top: "unpool" upsample_param { scale: 2 } }"""
    out = forward(tmp_path, layers, {"pooled": pooled, "mask": mask}, options={"Upsample": "segnet"})
    want = np.zeros((1, 2, 16), np.float32)
    for c in range(2):
        want[0, c, mask[0, c].astype(int).ravel()] = pooled[0, c].ravel()
    np.testing.assert_array_equal(out["unpool"], want.reshape(1, 2, 4, 4))
