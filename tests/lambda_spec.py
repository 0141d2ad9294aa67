"""The facts of Lambda Cloud's public API that the emulator (lambda_emulator.py) enforces and the client relies on.

Source: Lambda Cloud API v1, OpenAPI spec version 1.8.3 (as the issue that asked for this file read it,
December 2026), and two independent clients (SkyPilot's and dstack's) for what the spec leaves implicit.
Facts marked "(assumed)" were not found written down and are the emulator's choice; change them here
when the spec says otherwise. tests/test_lambda_spec.py keeps the client's routes and error codes, and
the emulator's routes, inside these lists, so the client and the emulator cannot drift from the spec
together.
"""

from __future__ import annotations

SPEC_VERSION = "1.8.3"

#: (method, path under /api/v1) of every operation the client or the emulator uses; ``{}`` is an id.
ROUTES = frozenset({
    ("GET", "/instance-types"),
    ("GET", "/images"),
    ("GET", "/instances"),
    ("GET", "/instances/{}"),
    ("POST", "/instance-operations/launch"),
    ("POST", "/instance-operations/terminate"),
    ("GET", "/ssh-keys"),
    ("POST", "/ssh-keys"),
    ("DELETE", "/ssh-keys/{}"),
    ("GET", "/firewall-rulesets"),
    ("POST", "/firewall-rulesets"),
    ("DELETE", "/firewall-rulesets/{}"),
    ("GET", "/firewall-rules"),  # account-wide rules: still read and cleaned for clusters of older cumulo
    ("PUT", "/firewall-rules"),
})

#: Error codes (``{"error": {"code", "message", "suggestion"}}``) and the HTTP status each comes with.
ERROR_CODES = {
    "global/invalid-api-key": 401,
    "global/account-inactive": 403,
    "global/invalid-address": 403,
    "global/invalid-parameters": 400,
    "global/object-does-not-exist": 404,
    "global/not-found": 404,
    "global/quota-exceeded": 400,
    "global/too-many-requests": 429,
    "global/internal-error": 500,
    "instance-operations/launch/insufficient-capacity": 400,
    "firewall-ruleset-in-use": 409,
    "provider/internal-unavailable": 503,  # (assumed) the code of an upstream failure that says "try again"
}

#: An instance's two addresses (``GET /instances``): ``ip`` is its public IPv4 address, what the notebook
#: dials (the scheduler's TLS port, SSH for the dashboard tunnel); ``private_ip`` its private one in the
#: region's network, what the other instances dial (the workers' scheduler address). They differ; both are
#: null until the instance is up (assumed: until it is active).
INSTANCE_ADDRESSES = {"ip": "public", "private_ip": "private"}

#: Instance statuses.
STATUSES = frozenset({"booting", "active", "unhealthy", "terminating", "terminated", "preempted"})

MAX_NAME = 64  # instance, ruleset and SSH key names
MAX_USER_DATA = 1024 * 1024  # bytes of cloud-init user data
MAX_FIREWALL_RULES = 20  # rules in the account-wide list, and in one ruleset (assumed the same limit)
MAX_TAGS = 50  # (assumed)
TAG_KEY = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"  # (assumed) lower-case letters, digits and '-'
MAX_TAG_VALUE = 255  # (assumed)
#: Regions where firewall rules do not apply (the spec says so of us-south-1).
NO_FIREWALL_REGIONS = frozenset({"us-south-1"})
#: Launch pacing: one launch per 12 s, and five in any minute.
LAUNCH_INTERVAL = 12.0
LAUNCHES_PER_MINUTE = 5
