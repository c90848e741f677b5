"""A Faster R-CNN test net in the style of TFFRCNN's lib/networks/VGGnet_test.py, written for the tests."""
import tensorflow as tf
from .network import Network
from ..fast_rcnn.config import cfg


class Tiny_test(Network):
    def __init__(self, trainable=True):
        self.inputs = []
        self.data = tf.placeholder(tf.float32, shape=[None, None, None, 3])
        self.im_info = tf.placeholder(tf.float32, shape=[None, 3])
        self.layers = dict({'data': self.data, 'im_info': self.im_info})
        self.setup()

    def setup(self):
        n_classes = cfg.NCLASSES
        anchor_scales = cfg.ANCHOR_SCALES
        _feat_stride = [4, ]

        (self.feed('data')
         .conv(3, 3, 6, 1, 1, name='conv1', trainable=False)
         .max_pool(2, 2, 2, 2, padding='VALID', name='pool1')
         .conv(3, 3, 8, 2, 2, biased=False, relu=False, name='conv2')
         .batch_normalization(name='bn2', is_training=False))

        (self.feed('bn2')
         .conv(1, 1, len(anchor_scales) * 3 * 2, 1, 1, padding='VALID', relu=False, name='rpn_cls_score'))

        (self.feed('bn2')
         .conv(1, 1, len(anchor_scales) * 3 * 4, 1, 1, padding='VALID', relu=False, name='rpn_bbox_pred'))

        (self.feed('rpn_cls_score')
         .spatial_reshape_layer(2, name='rpn_cls_score_reshape')
         .spatial_softmax(name='rpn_cls_prob'))

        (self.feed('rpn_cls_prob')
         .spatial_reshape_layer(len(anchor_scales) * 3 * 2, name='rpn_cls_prob_reshape'))

        (self.feed('rpn_cls_prob_reshape', 'rpn_bbox_pred', 'im_info')
         .proposal_layer(_feat_stride, anchor_scales, 'TEST', name='rois'))

        (self.feed('bn2', 'rois')
         .roi_pool(2, 2, 1.0 / 4, name='pool_5')
         .fc(n_classes, relu=False, name='cls_score')
         .softmax(name='cls_prob'))
