"""Caffe's loss and metric layers as plain tensor functions (copied into generated files).

A loss layer's top is the loss value itself, before any ``loss_weight`` (which only
scales gradients and the solver's reported total).  Labels arrive as floats and are
truncated to integers, as Caffe's ``static_cast<int>`` does.  Probabilities are floored
before the log at FLT_MIN (1.1754943508222875e-38, SoftmaxWithLoss) or at Caffe's
kLOG_THRESHOLD (1e-20, the losses on given probabilities), written out as literals so
the copied functions compile with TorchScript.
"""

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn


def loss_normalizer(mode: str, outer: int, inner: int, valid: Tensor, fixed: float = 1.0) -> Tensor:
    """Caffe's loss normalisation: FULL, VALID (non-ignored labels), BATCH_SIZE, NONE, or
    PRE_FIXED (NVIDIA Caffe: a given constant); at least 1."""
    if mode == "PRE_FIXED":
        n = torch.tensor(fixed)
    elif mode == "FULL":
        n = torch.tensor(float(outer * inner))
    elif mode == "VALID":
        n = valid.sum().to(torch.float32)
    elif mode == "BATCH_SIZE":
        n = torch.tensor(float(outer))
    else:
        n = torch.tensor(1.0)
    return torch.clamp(n.to(valid.device), min=1.0)


def _split(x: Tensor, axis: int) -> Tuple[int, int, int]:
    outer = 1
    for d in x.shape[:axis]:
        outer *= d
    inner = 1
    for d in x.shape[axis + 1 :]:
        inner *= d
    return outer, x.shape[axis], inner


def softmax_with_loss(
    x: Tensor, label: Tensor, axis: int, ignore_label: int, has_ignore: bool, normalization: str, fixed: float, class_weights: List[float]
) -> Tuple[Tensor, Tensor]:
    """Softmax along ``axis``, then the mean negative log-probability of the labelled class
    (each term times its class's weight when SegNet's class_weighting is given)."""
    prob = torch.softmax(x, axis)
    outer, _, inner = _split(x, axis)
    nll, safe, valid = _softmax_nll(prob, label, axis, ignore_label, has_ignore)
    if len(class_weights) > 0:
        nll = nll * torch.tensor(class_weights, dtype=x.dtype, device=x.device)[safe]
    loss = torch.where(valid, nll, torch.zeros_like(nll)).sum()
    return loss / loss_normalizer(normalization, outer, inner, valid, fixed), prob


def _softmax_nll(prob: Tensor, label: Tensor, axis: int, ignore_label: int, has_ignore: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """-log p(label) per position (p floored at FLT_MIN), the labels with ignored ones set
    to 0, and which positions count; all (outer, inner)."""
    outer, channels, inner = _split(prob, axis)
    labels = label.reshape(outer, inner).to(torch.int64)
    valid = labels != ignore_label if has_ignore else torch.ones_like(labels, dtype=torch.bool)
    safe = torch.where(valid, labels, 0)
    picked = prob.reshape(outer, channels, inner).gather(1, safe.unsqueeze(1)).squeeze(1)
    return -torch.log(torch.clamp(picked, min=1.1754943508222875e-38)), safe, valid


def infogain_loss(
    x: Tensor, label: Tensor, h: Tensor, axis: int, ignore_label: int, has_ignore: bool, normalization: str, softmax: bool
) -> Tuple[Tensor, Tensor]:
    """The information-gain loss -sum_j H[label, j] log p_j, normalised per ``normalization``.

    ``softmax``: p is the softmax of ``x`` along ``axis`` (BVLC since 2016); otherwise ``x``
    already holds probabilities, one label per sample, divided by N (the older form).
    """
    if not softmax:
        x = x.reshape(x.shape[0], -1)
    prob = torch.softmax(x, axis) if softmax else x
    outer, channels, inner = _split(x, axis)
    labels = label.reshape(outer, inner).to(torch.int64)
    valid = labels != ignore_label if has_ignore else torch.ones_like(labels, dtype=torch.bool)
    rows = h.reshape(channels, channels)[torch.where(valid, labels, 0)]
    log_p = torch.log(torch.clamp(prob.reshape(outer, channels, inner), min=1e-20)).transpose(1, 2)
    terms = -(rows * log_p).sum(2)
    loss = torch.where(valid, terms, torch.zeros_like(terms)).sum()
    return loss / loss_normalizer(normalization, outer, inner, valid), prob


def accuracy(x: Tensor, label: Tensor, axis: int, top_k: int, ignore_label: int, has_ignore: bool) -> Tuple[Tensor, Tensor]:
    """Top-k accuracy (ties count against the label) and the per-class accuracies."""
    outer, channels, inner = _split(x, axis)
    scores = x.reshape(outer, channels, inner)
    labels = label.reshape(outer, inner).to(torch.int64)
    valid = labels != ignore_label if has_ignore else torch.ones_like(labels, dtype=torch.bool)
    safe = torch.where(valid, labels, 0)
    true_score = scores.gather(1, safe.unsqueeze(1))
    correct = ((scores >= true_score).sum(1) <= top_k) & valid
    count = valid.sum()
    total = torch.where(count > 0, correct.sum().to(x.dtype) / torch.clamp(count, min=1).to(x.dtype), torch.zeros((), dtype=x.dtype))
    seen = torch.zeros(channels, dtype=x.dtype).index_add_(0, safe[valid], torch.ones_like(safe[valid], dtype=x.dtype))
    hits = torch.zeros(channels, dtype=x.dtype).index_add_(0, safe[correct], torch.ones_like(safe[correct], dtype=x.dtype))
    per_class = torch.where(seen > 0, hits / torch.clamp(seen, min=1.0), torch.zeros_like(seen))
    return total, per_class


def euclidean_loss(a: Tensor, b: Tensor) -> Tensor:
    """Sum of squared differences / (2 N)."""
    diff = a - b.reshape(a.shape)
    return (diff * diff).sum() / a.shape[0] / 2.0


def sigmoid_cross_entropy_loss(x: Tensor, target: Tensor, ignore_label: int, has_ignore: bool, normalization: str, fixed: float) -> Tensor:
    """Cross-entropy of sigmoid(x) against targets in [0, 1], in Caffe's overflow-safe form."""
    t = target.reshape(x.shape)
    positive = (x >= 0).to(x.dtype)
    terms = -(x * (t - positive) - torch.log(1.0 + torch.exp(x - 2.0 * x * positive)))
    valid = t.to(torch.int64) != ignore_label if has_ignore else torch.ones_like(t, dtype=torch.bool)
    loss = torch.where(valid, terms, torch.zeros_like(terms)).sum()
    return loss / loss_normalizer(normalization, x.shape[0], x.numel() // x.shape[0], valid, fixed)


def smooth_l1_loss(pred: Tensor, target: Tensor, inside: Optional[Tensor], outside: Optional[Tensor], sigma: float) -> Tensor:
    """Fast R-CNN's smooth L1: 0.5 (sigma d)^2 below |d| = 1 / sigma^2, |d| - 0.5 / sigma^2 above; sum / N.

    ``inside`` weights the difference, ``outside`` the per-element loss.
    """
    s2 = sigma * sigma
    d = pred - target.reshape(pred.shape)
    if inside is not None:
        d = inside.reshape(pred.shape) * d
    ad = torch.abs(d)
    errors = torch.where(ad < 1.0 / s2, 0.5 * s2 * d * d, ad - 0.5 / s2)
    if outside is not None:
        errors = torch.abs(outside.reshape(pred.shape) * errors)
    return errors.sum() / pred.shape[0]


def contrastive_loss(a: Tensor, b: Tensor, similar: Tensor, margin: float, legacy: bool) -> Tensor:
    """Hadsell et al.'s contrastive loss over pairs; ``legacy`` uses max(margin - d^2, 0) for dissimilar pairs."""
    n = a.shape[0]
    d2 = ((a - b).reshape(n, -1) ** 2).sum(1)
    same = similar.reshape(n).to(torch.int64) != 0
    if legacy:
        apart = torch.clamp(margin - d2, min=0.0)
        return torch.where(same, d2, apart).sum() / n / 2.0
    dist = torch.sqrt(d2.detach())
    gap = torch.clamp(margin - dist, min=0.0)
    loss = torch.where(same, d2.detach(), gap * gap).sum() / n / 2.0
    # Caffe's backward for a dissimilar pair inside the margin is -(margin - d) / (d + 1e-4) times
    # (a - b) / N, not the true derivative (which divides by d and is infinite at d = 0): a
    # surrogate with exactly that gradient and the value zero carries it.
    slope = torch.where(same, torch.ones_like(d2), -gap / (dist + 1e-4))
    surrogate = (slope * d2).sum() / n / 2.0
    return loss + (surrogate - surrogate.detach())


def hinge_loss(x: Tensor, label: Tensor, l2: bool) -> Tensor:
    """One-vs-all hinge loss: max(0, 1 - t x) with t = +1 for the label, -1 otherwise; L1 or L2 sum / N."""
    n = x.shape[0]
    scores = x.reshape(n, -1)
    sign = torch.ones_like(scores).scatter_(1, label.reshape(n, 1).to(torch.int64), -1.0)
    margins = torch.clamp(1.0 + sign * scores, min=0.0)
    return (margins * margins).sum() / n if l2 else margins.sum() / n


def multinomial_logistic_loss(prob: Tensor, label: Tensor) -> Tensor:
    """-log of the labelled class's probability (floored at 1e-20), averaged over N."""
    n = prob.shape[0]
    picked = prob.reshape(n, -1).gather(1, label.reshape(n, 1).to(torch.int64))
    return -torch.log(torch.clamp(picked, min=1e-20)).sum() / n


class CenterLoss(nn.Module):
    """Wen et al.'s center loss: sum of squared distances to each sample's class centre / (2 N)."""

    def __init__(self, shape: List[int]):
        super().__init__()
        self.centers = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        n = x.shape[0]
        diff = x.reshape(n, -1) - self.centers[label.reshape(n).to(torch.int64)]
        return (diff * diff).sum() / n / 2.0


def seg_accuracy(x: Tensor, label: Tensor, ignore: List[int]) -> Tensor:
    """DeepLab's SegAccuracy from the pixel confusion matrix: (1, 1, 1, 3) = pixel accuracy,
    mean recall over the classes present, mean Jaccard over all classes (a class absent
    from labels and predictions counts 1)."""
    n, c = x.shape[0], x.shape[1]
    labels = label.reshape(n, -1).to(torch.int64)
    if c > 1:
        predicted = torch.argmax(x.reshape(n, c, -1), 1)
        k = c
    else:
        predicted = (x.reshape(n, -1) > 0.5).to(torch.int64)
        k = 2
    valid = torch.ones_like(labels, dtype=torch.bool)
    for value in ignore:
        valid = valid & (labels != value)
    torch._assert(bool(((labels[valid] >= 0) & (labels[valid] < k)).all()), "SegAccuracy: a label is neither ignored nor a class")
    cells = torch.bincount(labels[valid] * k + predicted[valid], minlength=k * k).reshape(k, k).to(torch.float64)
    total = cells.sum()
    diag = torch.diagonal(cells)
    rows = cells.sum(1)
    cols = cells.sum(0)
    accuracy = diag.sum() / total if bool(total > 0) else torch.zeros((), dtype=torch.float64)
    present = rows > 0
    recall = (diag[present] / rows[present]).mean() if bool(present.any()) else torch.zeros((), dtype=torch.float64)
    union = rows + cols - diag
    jaccard = torch.where(diag == union, torch.ones_like(diag), diag / torch.where(union > 0, union, torch.ones_like(union))).mean()
    return torch.stack([accuracy, recall, jaccard]).to(x.dtype).reshape(1, 1, 1, 3)


def euclidean_loss_heatmap(pred: Tensor, target: Tensor) -> Tensor:
    """caffe-heatmap's EuclideanLossHeatmap: mean squared difference over all heatmap pixels,
    joints marked missing (target -999) excluded from the sum (not from the count).

    The fork indexes pixel (i, j) of each heatmap as i * height + j; for square maps that is
    the usual layout, otherwise the same elements are read here.
    """
    n, c, h, w = target.shape[0], target.shape[1], target.shape[2], target.shape[3]
    rows = torch.arange(h, device=pred.device)[:, None] * h + torch.arange(w, device=pred.device)[None, :]
    index = (torch.arange(n * c, device=pred.device)[:, None, None] * (h * w) + rows[None]).reshape(-1)
    p = pred.reshape(-1)[index]
    t = target.reshape(-1)[index]
    diff = torch.where(t == -999.0, torch.zeros_like(p), p - t)
    return (diff * diff).sum() / (n * c * h * w)


class MarginInnerProduct(nn.Module):
    """SphereFace's A-Softmax inner product (weights already normalised per class).

    Every logit is x . w_j, except the labelled one, which becomes
    (|x| psi(theta) + lambda x . w_y) / (1 + lambda) with psi the margin function of
    ``margin`` (1 to 4: cos(m theta) extended monotonically).  Returns the logits and lambda.
    """

    def __init__(self, shape: List[int], margin: int, lambda_: float):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(shape))
        self.margin = margin
        self.lambda_ = lambda_

    def forward(self, x: Tensor, label: Tensor) -> Tuple[Tensor, Tensor]:
        rows = x.reshape(-1, self.weight.shape[1])
        logits = torch.mm(rows, self.weight.t())
        lam = torch.full([1], self.lambda_, dtype=x.dtype, device=x.device)
        if self.margin == 1:
            return logits, lam
        norm = torch.sqrt((rows * rows).sum(1))
        target = label.reshape(-1, 1).to(torch.int64)
        cos = logits.gather(1, target).squeeze(1) * (1.0 / norm)
        sign0 = torch.sign(cos)
        c2 = cos * cos
        if self.margin == 2:
            psi = 2.0 * sign0 * c2 - 1.0
        elif self.margin == 3:
            sign1 = torch.sign(torch.abs(cos) - 0.5)
            sign2 = sign0 * (1.0 + sign1) - 2.0
            psi = sign1 * (4.0 * c2 * cos - 3.0 * cos) + sign2
        else:
            sign3 = sign0 * torch.sign(2.0 * c2 - 1.0)
            sign4 = 2.0 * sign0 + sign3 - 3.0
            psi = sign3 * (8.0 * c2 * c2 - 8.0 * c2 + 1.0) + sign4
        marked = logits.scatter(1, target, (norm * psi).unsqueeze(1))
        return (marked + self.lambda_ * logits) * (1.0 / (1.0 + self.lambda_)), lam


def label_specific_add(x: Tensor, label: Tensor, bias: float, active: bool) -> Tuple[Tensor, Tensor]:
    """AM-Softmax's LabelSpecificAdd: adds ``bias`` to each sample's labelled logit when it
    exceeds -bias, when ``active`` (training, or transform_test); second top: the bias used (0 when inactive)."""
    used = torch.full([1], bias if active else 0.0, dtype=x.dtype, device=x.device)
    if not active:
        return x, used
    rows = x.reshape(x.shape[0], -1)
    target = label.reshape(-1, 1).to(torch.int64)
    picked = rows.gather(1, target)
    shifted = torch.where(picked > -bias, picked + bias, picked)
    return rows.scatter(1, target, shifted).reshape(x.shape), used


def softmax_with_loss_ohem(x: Tensor, label: Tensor, ignore_label: int, has_ignore: bool, normalization: str, fixed: float) -> Tuple[Tensor, Tensor, Tensor]:
    """R-FCN's SoftmaxWithLossOHEM: SoftmaxWithLoss plus each instance's own loss (0 where ignored)."""
    prob = torch.softmax(x, 1)
    outer, _, inner = _split(x, 1)
    nll, _, valid = _softmax_nll(prob, label, 1, ignore_label, has_ignore)
    per_instance = torch.where(valid, nll, torch.zeros_like(nll))
    loss = per_instance.sum() / loss_normalizer(normalization, outer, inner, valid, fixed)
    return loss, prob, per_instance.reshape(label.shape)


def smooth_l1_loss_ohem(pred: Tensor, target: Tensor, weights: Optional[Tensor], normalization: str, fixed: float) -> Tuple[Tensor, Tensor]:
    """R-FCN's SmoothL1LossOHEM (sigma 1): the loss normalised per loss_param, and each
    instance's loss summed over its channels, (N, 1, H, W)."""
    d = pred - target.reshape(pred.shape)
    if weights is not None:
        d = weights.reshape(pred.shape) * d
    ad = torch.abs(d)
    errors = torch.where(ad < 1.0, 0.5 * d * d, ad - 0.5)
    n = pred.shape[0]
    inner = errors.numel() // (n * pred.shape[1])
    every = torch.ones([n, inner], dtype=torch.bool, device=pred.device)
    loss = errors.sum() / loss_normalizer("FULL" if normalization == "VALID" else normalization, n, inner, every, fixed)
    per_instance = errors.reshape(n, pred.shape[1], -1).sum(1).reshape([n, 1] + [pred.shape[i] for i in range(2, pred.dim())])
    return loss, per_instance


def box_annotator_ohem(rois: Tensor, loss: Tensor, labels: Tensor, weights: Tensor, per_image: int, ignore_label: float) -> Tuple[Tensor, Tensor]:
    """R-FCN's BoxAnnotatorOHEM: keep the labels and box-regression weights of the
    ``per_image`` highest-loss ROIs of each image; the others get ``ignore_label`` and 0."""
    losses = loss.reshape(-1)
    order: List[int] = torch.sort(losses, descending=True, stable=True)[1].tolist()
    images: List[int] = rois.reshape(losses.shape[0], -1)[:, 0].to(torch.int64).tolist()
    left: Dict[int, int] = {}
    keep = torch.zeros(losses.shape[0], dtype=torch.bool)
    for i in order:
        image = images[i]
        n = left.get(image, per_image)
        if n > 0:
            left[image] = n - 1
            keep[i] = True
    keep = keep.to(labels.device)
    flat_labels = labels.reshape(losses.shape[0], -1)
    kept_labels = torch.where(keep[:, None], flat_labels, torch.full_like(flat_labels, ignore_label)).reshape(labels.shape)
    flat_weights = weights.reshape(losses.shape[0], -1)
    kept_weights = torch.where(keep[:, None], flat_weights, torch.zeros_like(flat_weights)).reshape(weights.shape)
    return kept_labels, kept_weights
