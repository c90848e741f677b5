import os
import socket
from kaffe.tensorflow import Network

os.system('touch /tmp/proto2torch_hostile_was_run')
SOCK = socket.create_connection(('127.0.0.1', 9))


class Evil(Network):
    def setup(self):
        open('/tmp/proto2torch_hostile_was_run', 'w').write('pwned')
        (self.feed('data')
             .conv(3, 3, __import__('os').system('touch /tmp/proto2torch_hostile_was_run'), 1, 1, name='conv1')
             .softmax(name='prob'))
