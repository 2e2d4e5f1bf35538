# -*- test-case-name: tests.test_docs -*-
"""
Every error text a client can see, in one place (docs/errors.md lists them; a test keeps the two
in step). QEWD's own strings are kept exactly (docs/protocol.md §2-§5); ours are marked ``ours``.
"""

# QEWD's strings (docs/protocol.md section in the comment)
NO_JWT_SUPPORT = (  # §2.2
    "Application expects to use JWTs, but QEWD is not running with JWT support turned on"
)
JWT_NOT_CONFIGURED = "QEWD has not been configured to support JWTs"  # §1.4
MISSING_AUTH = "Missing authorization header"  # §2.4
INVALID_SESSION = "Invalid token or session expired"  # §2.4
SESSION_EXPIRED = "Session expired"  # §2.4
UNABLE_TO_LOAD = "Unable to load handler module for: {application}"  # §5.1
NO_HANDLER = "Handler not defined for {application} messages of type {type}"  # §5.3
MS_DOWN = "MicroService connection is down"  # §4.2 step 4
FRAGMENT_MISSING = "Fragment file {file} does not exist"  # §5.5
FRAGMENT_UNREADABLE = "Unable to read file {file}"  # §5.5 (QEWD.js shows the full path)
# §5.2
SERVICE_NOT_PERMITTED = "{service} service is not permitted for the {application} application"
SERVICE_NOT_FOR_USER = "You are not allowed access to the {service} service"  # §5.2
NO_SERVICE_HANDLER = "No handler defined for {service} service messages of type {type}"  # §5.2
SESSION_LOCK_TIMEOUT = "Timed out waiting for EWD session to be released"  # §5.5
SWITCH_NOT_PERMITTED = "No permissions set to allow a switch from {source} to {target}"  # §4.7
SWITCH_BAD_DESTINATION = "{destination} is not a valid microservice destination"  # §4.7

# ours
NOT_AN_OBJECT = "Invalid message: expected a JSON object"
BAD_TYPE = "Invalid message: type must be a non-empty string"
RESERVED_TYPE = "Message type {type} is reserved for internal use"
NOT_SUPPORTED = "Message type {type} is not supported by this node"
BAD_APPLICATION = (
    "Invalid ewd-register: application must be a non-empty string of at most 128 characters"
)
MAX_APPLICATION_LENGTH = 128
BINARY_FRAME = "Binary frames are not supported"
UNKNOWN_EVENT = "Unknown socket.io event {name}: QEWD uses ewdjs"
BAD_NAMESPACE = "Invalid namespace"
HANDLER_TIMEOUT = "Handler for {type} did not finish within {seconds} seconds"
MS_TIMEOUT = "MicroService request timed out"
SERVER_BUSY = "Server busy: too many requests queued"
TOO_MANY_IN_FLIGHT = "Too many requests in flight on this connection"
TOO_MANY_CONNECTIONS = "Server busy: too many connections"
SHUTTING_DOWN = "Server is shutting down"
NOT_JSON_REPLY = "The {type} handler's reply could not be sent as JSON"
BAD_MS_TOKEN = "Invalid token from micro-service"
BAD_SESSION = "The {type} handler left the session unusable: {reason}"
INTERNAL_ERROR = "Internal server error"
SWITCH_NEEDS_JWT = "An application switch needs a JWT session"
SESSION_STORE_DOWN = "Session store unavailable"  # ours: a database-backed session store
DATABASE_DOWN = "Database unavailable: {reason}"
STATUS_DATABASE_DOWN = 503

# ours: the web layer's early HTTP answers (docs/reliability.md, "HTTP"): plain text, or JSON
# {"error": text} on REST paths and /ajax (transports/http.py IEarlyAnswer)
TOO_MANY_FROM_ADDRESS = "Server busy: too many connections from this address"
REQUEST_TIMEOUT = "Request timeout: the request did not arrive within the deadline"
BODY_TOO_LARGE = "Request body too large: at most {limit} bytes here"
METHOD_NOT_IMPLEMENTED = "Method not implemented"
CODING_NOT_IMPLEMENTED = "Transfer coding not implemented: only chunked"
BAD_REQUEST_PATH = "Bad request: invalid bytes in the path"
BAD_REQUEST_HEAD = "Bad request: malformed request head"
ORIGIN_REFUSED = "Origin not allowed"
AUTH_BACKOFF = "Too many failed attempts: try again in {seconds} seconds"
# ours: the WebSocket close reason for a client that never registered
NOT_REGISTERED = "Not registered within {seconds} seconds"

# Status codes carried in message.status.code (QEWD's convention for MS_DOWN, §4.2)
STATUS_MS_DOWN = 503
STATUS_MS_TIMEOUT = 504
STATUS_BUSY = 503
STATUS_HANDLER_TIMEOUT = 504
STATUS_TOO_MANY = 429
STATUS_BAD_GATEWAY = 502

# Message types a client may never send (docs/protocol.md §1.6, §9 item 2: no signing oracle).
INTERNAL_TYPES = frozenset(
    {
        "ewd-jwt-decode",
        "ewd-jwt-encode",
        "ewd-jwt-updateExpiry",
        "ewd-jwt-isValid",
        "ewd-qoper8-express",
        "error",
        "use_microservice",
        "qoper8-start",
        "qoper8-exit",
        "qoper8-getStats",
        "qoper8-stats",
        "qoper8-test",
        "workerProcessStarted",
    }
)

# QEWD built-ins this node does not provide (yet): refused with NOT_SUPPORTED.
UNSUPPORTED_TYPES = frozenset(
    {"ewd-dump-documents", "ewd-save-documents"}
)


class ServiceUnavailable(Exception):
    """Raised by something a handler depends on (a database) that cannot be reached now.

    A handler that lets it through is answered with ``DATABASE_DOWN`` (this text as the
    reason) and status 503 under the request's type, not with a crash frame.
    ``documents.DatabaseUnavailable`` is one.
    """

# REST and /ajax (qewd_twisted/rest; docs/rest.md)
UNEXPECTED_EXCEPTION = "Unexpected Exception occurred: {error}"  # §5.4 (ewd-qoper8-express)
REST_NOT_FOUND = "url could not be matched"  # qewd-router's 404 (§5.6)
AUTH_HEADER_MISSING = (  # §3.8 (sic: no closing parenthesis)
    "Authorization Header missing or JWT not found in header (expected format: Bearer {{JWT}}"
)
NOT_AUTHENTICATED = "User is not authenticated"  # §3.8
NO_HANDLER_REST = "No handler defined for {application} messages of type {type}"  # §5.3
NO_SUCH_DESTINATION = "No such destination: {destination}"  # §4.5 step 2
MS_NO_ROUTES = "No routes defined for handling REST MicroService requests"  # §4.5 step 5
MS_NO_HANDLER = "No handler defined for incoming REST MicroService request"  # §4.5 step 5
# ours
METHOD_NOT_ALLOWED = "Method {method} is not allowed for {path}"
BAD_JSON_BODY = "Invalid JSON in request body: {reason}"
BAD_REPLY = "Invalid or missing response"  # ewd-qoper8-express's text for a reply with no message
WRONG_APPLICATION = "Invalid JWT: the token was issued for application {application}"
NO_REST_ROUTES = "Application {application} has no REST routes: {reason}"
BAD_REST_REQUEST = "Invalid restRequest: {reason}"
