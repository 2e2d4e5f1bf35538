# An embedded QEWD node: run with `twistd -ny examples/embed/qewd.tac`.
#
# The node is an ordinary Twisted service: here it sits under your own MultiService next to
# whatever else your application runs, built from a startup file (or from a dict with
# qewd_twisted.config_from_dict).
import os

from twisted.application.service import Application, MultiService
from twisted.internet import reactor

from qewd_twisted import QEWDService, load_config

HERE = os.path.dirname(os.path.abspath(__file__))

application = Application("my-app-with-qewd")
parent = MultiService()
parent.setServiceParent(application)

node = QEWDService(load_config(os.path.join(HERE, "startup.py")), reactor)
node.setServiceParent(parent)
