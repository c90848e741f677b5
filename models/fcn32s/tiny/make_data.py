"""Write data.npz: one synthetic 64x64 image and its label map for the tiny FCN-32s recipe.

Three rectangles of classes 3, 8 and 15 on a noisy background (class 0); each rectangle's
colour says its class, and a one-pixel border around it is labelled 255 (ignored), as VOC's
object boundaries are.  Deterministic: the same file every time.
"""

from pathlib import Path

import numpy as np

rng = np.random.default_rng(2017)
image = rng.normal(0.0, 0.3, (3, 64, 64)).astype(np.float32)
label = np.zeros((64, 64), np.float32)
for cls, (y, x, h, w) in {3: (6, 8, 20, 24), 8: (36, 4, 22, 18), 15: (30, 34, 26, 26)}.items():
    colour = np.array([np.cos(cls), np.sin(cls), np.cos(2 * cls)], np.float32)
    image[:, y : y + h, x : x + w] = colour[:, None, None] + rng.normal(0.0, 0.1, (3, h, w))
    label[y - 1 : y + h + 1, x - 1 : x + w + 1] = 255
    label[y : y + h, x : x + w] = cls
np.savez_compressed(Path(__file__).with_name("data.npz"), **{"input:data": image[None], "input:label": label[None, None]})
