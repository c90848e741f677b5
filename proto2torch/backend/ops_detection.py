"""Region layers of the R-CNN family (copied into generated files): ROI pooling,
position-sensitive ROI pooling and RPN proposals.

Box arithmetic is in float32 with Caffe's "+ 1" pixel convention; rounding is C's
``round`` (halves away from zero), done in float64 so no float32 sum can tip it.
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def round_half_away(x: Tensor) -> Tensor:
    """C's round(): halves go away from zero (torch.round goes to even)."""
    d = x.to(torch.float64)
    return torch.sign(d) * torch.floor(torch.abs(d) + 0.5)


def roi_pool(x: Tensor, rois: Tensor, pooled_h: int, pooled_w: int, spatial_scale: float) -> Tensor:
    """Fast R-CNN ROI max pooling: rows (batch, x1, y1, x2, y2) in image pixels → (R, C, pooled_h, pooled_w).

    Each ROI is rounded onto the feature map, split into pooled_h x pooled_w bins with
    floor/ceil edges, and each bin takes its maximum; empty bins give 0.
    """
    height, width = x.shape[2], x.shape[3]
    boxes = rois.reshape(-1, 5)
    out: List[Tensor] = []
    scale = torch.tensor(spatial_scale, dtype=torch.float32)
    ph_idx = torch.arange(pooled_h, dtype=torch.float32)
    pw_idx = torch.arange(pooled_w, dtype=torch.float32)
    for r in range(boxes.shape[0]):
        row = boxes[r].to(torch.float32)
        start: List[int] = round_half_away(row[1:3] * scale).to(torch.int64).tolist()
        end: List[int] = round_half_away(row[3:5] * scale).to(torch.int64).tolist()
        roi_w = max(end[0] - start[0] + 1, 1)
        roi_h = max(end[1] - start[1] + 1, 1)
        bin_h = torch.tensor(float(roi_h), dtype=torch.float32) / float(pooled_h)
        bin_w = torch.tensor(float(roi_w), dtype=torch.float32) / float(pooled_w)
        hs = torch.clamp(torch.floor(ph_idx * bin_h).to(torch.int64) + start[1], 0, height)
        he = torch.clamp(torch.ceil((ph_idx + 1.0) * bin_h).to(torch.int64) + start[1], 0, height)
        ws = torch.clamp(torch.floor(pw_idx * bin_w).to(torch.int64) + start[0], 0, width)
        we = torch.clamp(torch.ceil((pw_idx + 1.0) * bin_w).to(torch.int64) + start[0], 0, width)
        feature = x[int(row[0])]
        rows: List[Tensor] = []
        for i in range(pooled_h):
            a, b = int(hs[i]), int(he[i])
            if b > a:
                rows.append(feature[:, a:b, :].amax(1))
            else:
                rows.append(torch.full([feature.shape[0], width], float("-inf"), dtype=x.dtype, device=x.device))
        band = torch.stack(rows, 1)  # (C, pooled_h, W)
        cols = torch.arange(width, device=x.device)
        inside = (cols[None, :] >= ws[:, None].to(x.device)) & (cols[None, :] < we[:, None].to(x.device))  # (pooled_w, W)
        masked = torch.where(inside[None, None, :, :], band[:, :, None, :], torch.tensor(float("-inf"), dtype=x.dtype, device=x.device))
        pooled = masked.amax(-1)
        empty = ((he <= hs)[:, None] | (we <= ws)[None, :]).to(x.device)
        out.append(torch.where(empty[None], torch.zeros_like(pooled), pooled))
    if len(out) == 0:
        return x.new_zeros([0, x.shape[1], pooled_h, pooled_w])
    return torch.stack(out, 0)


def psroi_pool(x: Tensor, rois: Tensor, output_dim: int, group_size: int, spatial_scale: float) -> Tensor:
    """R-FCN position-sensitive ROI average pooling → (R, output_dim, group_size, group_size).

    Bin (i, j) of output channel c averages input channel (c * group + i) * group + j over
    its window; ROI edges are rounded in image pixels, the right/bottom edge made
    inclusive (+ 1) before scaling; empty bins give 0.
    """
    height, width = x.shape[2], x.shape[3]
    boxes = rois.reshape(-1, 5).to(torch.float32)
    g = group_size
    scale = torch.tensor(spatial_scale, dtype=torch.float32)
    corners = round_half_away(boxes[:, 1:5]).to(torch.float32)
    start = corners[:, 0:2] * scale
    end = (corners[:, 2:4] + 1.0) * scale
    size = torch.clamp(end - start, min=0.1)
    bins = size / float(g)  # (R, 2): x, y
    idx = torch.arange(g, dtype=torch.float32)
    lo = torch.floor(idx[None, :, None] * bins[:, None, :] + start[:, None, :]).to(torch.int64)
    hi = torch.ceil((idx[None, :, None] + 1.0) * bins[:, None, :] + start[:, None, :]).to(torch.int64)
    ws = torch.clamp(lo[:, :, 0], 0, width)
    we = torch.clamp(hi[:, :, 0], 0, width)
    hs = torch.clamp(lo[:, :, 1], 0, height)
    he = torch.clamp(hi[:, :, 1], 0, height)
    # summed-area table (float64, so differences of large sums stay exact enough)
    table = F.pad(x.to(torch.float64).cumsum(2).cumsum(3), [1, 0, 1, 0])
    b = boxes[:, 0].to(torch.int64)[:, None, None, None]
    ctop = torch.arange(output_dim)[None, :, None, None]
    gi = torch.arange(g)[None, None, :, None]
    gj = torch.arange(g)[None, None, None, :]
    c = (ctop * g + gi) * g + gj
    h0 = hs[:, None, :, None]
    h1 = he[:, None, :, None]
    w0 = ws[:, None, None, :]
    w1 = we[:, None, None, :]
    total = table[b, c, h1, w1] - table[b, c, h0, w1] - table[b, c, h1, w0] + table[b, c, h0, w0]
    area = ((h1 - h0) * (w1 - w0)).to(torch.float64)
    empty = (h1 <= h0) | (w1 <= w0)
    out = torch.where(empty, torch.zeros_like(total), total / torch.clamp(area, min=1.0))
    return out.to(x.dtype)


def _iou_plus_one(boxes: Tensor) -> Tensor:
    """IoU of every pair of (x1, y1, x2, y2) rows with the R-CNN "+ 1" pixel convention."""
    area = (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0)
    x1 = torch.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y1 = torch.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x2 = torch.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y2 = torch.minimum(boxes[:, None, 3], boxes[None, :, 3])
    inter = torch.clamp(x2 - x1 + 1.0, min=0.0) * torch.clamp(y2 - y1 + 1.0, min=0.0)
    return inter / (area[:, None] + area[None, :] - inter)


def greedy_nms(boxes: Tensor, threshold: float, limit: int) -> List[int]:
    """Indices kept by greedy NMS over boxes already sorted best first (IoU > threshold suppresses)."""
    overlap = _iou_plus_one(boxes) > threshold
    dead = torch.zeros(boxes.shape[0], dtype=torch.bool)
    keep: List[int] = []
    for i in range(boxes.shape[0]):
        if bool(dead[i]):
            continue
        keep.append(i)
        if limit > 0 and len(keep) == limit:
            break
        dead = dead | overlap[i]
    return keep


class Proposal(nn.Module):
    """RPN proposals: shift the anchors over the score map, apply the predicted deltas, clip,
    drop small boxes, sort by foreground score, NMS; rows (image, x1, y1, x2, y2) and scores.

    ``zero_small`` (Caffe's C++ Proposal) keeps too-small boxes with score 0 instead of
    dropping them (py-faster-rcnn); ``min_scale`` reads the min-size scale from im_info[2:4];
    ``score_column`` returns the scores as (R, 1) instead of (R,); ``max_aspect`` (TFFRCNN) also
    drops boxes whose width / height is over it or under its inverse.
    """

    def __init__(
        self,
        num_anchors: int,
        feat_stride: int,
        pre_nms_topn: int,
        post_nms_topn: int,
        nms_thresh: float,
        min_size: float,
        zero_small: bool = True,
        min_scale: bool = True,
        score_column: bool = False,
        max_aspect: float = 0.0,
    ):
        super().__init__()
        self.register_buffer("anchors", torch.zeros(num_anchors, 4))
        self.feat_stride = feat_stride
        self.pre_nms_topn = pre_nms_topn
        self.post_nms_topn = post_nms_topn
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.zero_small = zero_small
        self.min_scale = min_scale
        self.score_column = score_column
        self.max_aspect = max_aspect

    def forward(self, scores: Tensor, deltas: Tensor, im_info: Tensor) -> Tuple[Tensor, Tensor]:
        a = self.anchors.shape[0]
        h, w = scores.shape[2], scores.shape[3]
        sy = torch.arange(h, dtype=torch.float32, device=scores.device) * float(self.feat_stride)
        sx = torch.arange(w, dtype=torch.float32, device=scores.device) * float(self.feat_stride)
        shifts = torch.stack([sx[None, :].expand(h, w), sy[:, None].expand(h, w)], -1).repeat(1, 1, 2)  # (H, W, 4)
        anchors = (shifts[:, :, None, :] + self.anchors[None, None, :, :]).reshape(-1, 4)
        info = im_info.reshape(im_info.shape[0], -1).to(torch.float32)
        rois: List[Tensor] = []
        picked: List[Tensor] = []
        for n in range(scores.shape[0]):
            fg = scores[n, a:].permute(1, 2, 0).reshape(-1).to(torch.float32)
            d = deltas[n].reshape(a, 4, h, w).permute(2, 3, 0, 1).reshape(-1, 4).to(torch.float32)
            widths = anchors[:, 2] - anchors[:, 0] + 1.0
            heights = anchors[:, 3] - anchors[:, 1] + 1.0
            cx = d[:, 0] * widths + (anchors[:, 0] + 0.5 * widths)
            cy = d[:, 1] * heights + (anchors[:, 1] + 0.5 * heights)
            pw = torch.exp(d[:, 2]) * widths
            ph = torch.exp(d[:, 3]) * heights
            img_h, img_w = info[n, 0], info[n, 1]
            x1 = torch.clamp(torch.minimum(cx - 0.5 * pw, img_w - 1.0), min=0.0)
            y1 = torch.clamp(torch.minimum(cy - 0.5 * ph, img_h - 1.0), min=0.0)
            x2 = torch.clamp(torch.minimum(cx + 0.5 * pw, img_w - 1.0), min=0.0)
            y2 = torch.clamp(torch.minimum(cy + 0.5 * ph, img_h - 1.0), min=0.0)
            boxes = torch.stack([x1, y1, x2, y2], 1)
            scale_h = info[n, 2] if self.min_scale and info.shape[1] > 2 else torch.tensor(1.0)
            scale_w = info[n, 3] if self.min_scale and info.shape[1] > 3 else scale_h
            big = (x2 - x1 + 1.0 >= self.min_size * scale_w) & (y2 - y1 + 1.0 >= self.min_size * scale_h)
            if self.zero_small:
                fg = torch.where(big, fg, torch.zeros_like(fg))
            else:
                boxes = boxes[big]
                fg = fg[big]
            if self.max_aspect > 0.0:
                ratio = (boxes[:, 2] - boxes[:, 0] + 1.0) / (boxes[:, 3] - boxes[:, 1] + 1.0)
                regular = (ratio <= self.max_aspect) & (ratio >= 1.0 / self.max_aspect)
                boxes = boxes[regular]
                fg = fg[regular]
            order = torch.sort(fg, descending=True, stable=True)[1]
            if self.pre_nms_topn > 0:
                order = order[: self.pre_nms_topn]
            boxes = boxes[order]
            fg = fg[order]
            keep = torch.tensor(greedy_nms(boxes, self.nms_thresh, self.post_nms_topn), dtype=torch.int64)
            image = torch.full([keep.shape[0], 1], float(n), dtype=torch.float32)
            rois.append(torch.cat([image, boxes[keep]], 1))
            picked.append(fg[keep])
        kept = torch.cat(picked, 0).to(scores.dtype)
        return torch.cat(rois, 0).to(scores.dtype), kept.reshape(-1, 1) if self.score_column else kept


def _box_size(b: List[float], pixels: bool) -> float:
    if b[2] < b[0] or b[3] < b[1]:
        return 0.0
    if pixels:
        return (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0)
    return (b[2] - b[0]) * (b[3] - b[1])


def _jaccard(a: List[float], b: List[float], pixels: bool) -> float:
    """SSD's Jaccard overlap of (xmin, ymin, xmax, ymax) boxes, normalised or in pixels ("+ 1")."""
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return 0.0
    extra = 1.0 if pixels else 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0]) + extra
    ih = min(a[3], b[3]) - max(a[1], b[1]) + extra
    if iw <= 0.0 or ih <= 0.0:
        return 0.0
    inter = iw * ih
    return inter / (_box_size(a, pixels) + _box_size(b, pixels) - inter)


def _scaled(b: List[float], height: float, width: float) -> List[float]:
    return [b[0] * width, b[1] * height, b[2] * width, b[3] * height] + b[4:]


def detection_evaluate(
    det: Tensor, gt: Tensor, num_classes: int, background: int, threshold: float, use_difficult: bool, sizes: Optional[Tensor] = None
) -> Tensor:
    """SSD's DetectionEvaluate.  Rows of (1, 1, classes + detections, 5): first per class
    [-1, label, number of ground-truth boxes, -1, -1], then per detection (images and labels
    ascending, each label's detections by falling score) [image, label, score, tp, fp];
    a detection matching an already-matched box is a false positive, one matching a
    difficult box (when those are not evaluated) is neither.  With ``sizes`` (rows of
    height, width: one per image that has detections, in image order) overlaps are
    measured in pixels."""
    size_rows: List[List[float]] = [] if sizes is None else sizes.reshape(-1, 2).tolist()
    pixels = sizes is not None
    detections: List[List[float]] = det.reshape(-1, 7).tolist()
    truths: List[List[float]] = gt.reshape(-1, 8).tolist()
    boxes: Dict[int, Dict[int, List[List[float]]]] = {}
    positives: Dict[int, int] = {}
    for row in truths:
        image = int(row[0])
        if image == -1:
            break
        label = int(row[1])
        torch._assert(label != background, "DetectionEvaluate: background label in the ground truth")
        if image not in boxes:
            boxes[image] = {}
        if label not in boxes[image]:
            boxes[image][label] = []
        boxes[image][label].append(row[3:8])
        if use_difficult or row[7] == 0.0:
            positives[label] = positives.get(label, 0) + 1
    found: Dict[int, Dict[int, List[List[float]]]] = {}
    for row in detections:
        image = int(row[0])
        if image == -1:
            continue
        label = int(row[1])
        torch._assert(label != background, "DetectionEvaluate: background label in the detections")
        if image not in found:
            found[image] = {}
        if label not in found[image]:
            found[image][label] = []
        found[image][label].append(row[2:7])
    out: List[List[float]] = []
    for c in range(num_classes):
        if c != background:
            out.append([-1.0, float(c), float(positives.get(c, 0)), -1.0, -1.0])
    for image_index, image in enumerate(sorted(list(found.keys()))):
        height, width = 1.0, 1.0
        if pixels:
            torch._assert(image_index < len(size_rows), "DetectionEvaluate: fewer image sizes than images with detections")
            height, width = size_rows[image_index][0], size_rows[image_index][1]
        for label in sorted(list(found[image].keys())):
            dets = found[image][label]
            truth: List[List[float]] = []
            if image in boxes and label in boxes[image]:
                truth = [_scaled(t, height, width) for t in boxes[image][label]] if pixels else boxes[image][label]
            else:
                for d in dets:
                    out.append([float(image), float(label), d[0], 0.0, 1.0])
                continue
            scores = torch.tensor([d[0] for d in dets], dtype=torch.float64)
            order: List[int] = torch.sort(scores, descending=True, stable=True)[1].tolist()
            visited = [False for _ in truth]
            for i in order:
                d = dets[i]
                box = _scaled(d[1:5], height, width) if pixels else d[1:5]
                best = -1.0
                jmax = -1
                for j in range(len(truth)):
                    overlap = _jaccard(box, truth[j][0:4], pixels)
                    if overlap > best:
                        best = overlap
                        jmax = j
                tp, fp = 0.0, 1.0
                if best >= threshold:
                    if use_difficult or truth[jmax][4] == 0.0:
                        if not visited[jmax]:
                            tp, fp = 1.0, 0.0
                            visited[jmax] = True
                    else:
                        fp = 0.0
                out.append([float(image), float(label), d[0], tp, fp])
    total = det.reshape(-1, 7).shape[0] + num_classes - (1 if 0 <= background < num_classes else 0)
    result = torch.zeros(total, 5, dtype=det.dtype)
    if len(out) > 0:
        result[: len(out)] = torch.tensor(out, dtype=det.dtype)
    return result.reshape(1, 1, total, 5)
