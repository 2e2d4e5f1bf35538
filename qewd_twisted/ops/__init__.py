# -*- test-case-name: tests.test_ops -*-
"""
Operations: what the node reports about itself.

- `observe`: the `NodeObserver` hooks the node calls;
- `metrics`: Prometheus ``/metrics``;
- `operations`: ``/health``, ``/ready``, the request log and the status page's data;
- `status_page`: the HTML and JSON status pages.

May import: ``qewd_twisted.core`` (read-only), ``qewd_twisted.apps``, prometheus-client and
Twisted. The node core imports only `observe`.
"""
