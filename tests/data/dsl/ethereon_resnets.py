# Several model classes in one file, as caffe-tensorflow's resnet.py has (choose one with --class).
# Reference batch norm: batch_normalization(relu=...) with scale and offset; branches merge with add().
from kaffe.tensorflow import Network


class TinyResNetA(Network):
    def setup(self):
        (self.feed('data')
             .conv(7, 7, 16, 2, 2, biased=False, relu=False, name='conv1')
             .batch_normalization(relu=True, name='bn_conv1')
             .max_pool(3, 3, 2, 2, name='pool1')
             .conv(1, 1, 32, 1, 1, biased=False, relu=False, name='res2a_branch1')
             .batch_normalization(name='bn2a_branch1'))

        (self.feed('pool1')
             .conv(1, 1, 8, 1, 1, biased=False, relu=False, name='res2a_branch2a')
             .batch_normalization(relu=True, name='bn2a_branch2a')
             .conv(3, 3, 8, 1, 1, biased=False, relu=False, name='res2a_branch2b')
             .batch_normalization(relu=True, name='bn2a_branch2b')
             .conv(1, 1, 32, 1, 1, biased=False, relu=False, name='res2a_branch2c')
             .batch_normalization(name='bn2a_branch2c'))

        (self.feed('bn2a_branch1',
                   'bn2a_branch2c')
             .add(name='res2a')
             .relu(name='res2a_relu')
             .avg_pool(7, 7, 1, 1, padding='VALID', name='pool5')
             .fc(10, relu=False, name='fc10')
             .softmax(name='prob'))


class TinyResNetB(Network):
    def setup(self):
        (self.feed('data')
             .conv(3, 3, 4, 1, 1, name='conv1')
             .avg_pool(8, 8, 1, 1, padding='VALID', name='pool')
             .softmax(name='prob'))
