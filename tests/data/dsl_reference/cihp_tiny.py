"""A small net written for proto2torch's tests in the style of CIHP_PGN's utils/model_pgn.py: its
pyramid_pooling blocks (average pooling by pool_size, a 3x3 convolution, TF1's resize_bilinear back
to the input size) come from CIHP_PGN's own kaffe/tensorflow/network.py when TensorFlow runs it."""
from kaffe.tensorflow import Network


class TinyPGN(Network):
    def setup(self, is_training, n_classes, keep_prob):
        (self.feed('data')
             .conv(3, 3, 8, 1, 1, biased=True, relu=True, name='branch'))
        (self.feed('branch')
             .pyramid_pooling(4, 6, name='pp1'))
        (self.feed('branch')
             .pyramid_pooling(4, 3, name='pp2'))
        (self.feed('branch', 'pp1', 'pp2')
             .concat(axis=3, name='pp_out')
             .conv(1, 1, n_classes, 1, 1, biased=True, relu=False, name='score'))
