# -*- test-case-name: tests.test_docs -*-
__version__ = "0.1.0"
