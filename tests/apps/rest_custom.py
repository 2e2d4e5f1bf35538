"""A REST module (QEWD's simple form, /custom/<type>) that sets custom error responses in
``init(application, q)``, as QEWD.js modules do with ``this.setCustomErrorResponse``; also the
``custom`` WebSocket application (tests/test_parity_rest.py)."""


def init(application, q):
    q.set_custom_error_response(application=application, errorType="noTypeHandler",
                                text="Resource Not Found", statusCode="404")
    q.set_custom_error_response(application=application, errorType="sessionNotAuthenticated",
                                text="Please log in", statusCode=401)


def info(messageObj, finished):
    finished({"ok": True})


handlers = {"info": info}
