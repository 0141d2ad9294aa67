"""Runs on an EC2 instance: its id, and the spot interruption notice, from the metadata service (IMDSv2).

Not imported by cumulo: its source is embedded in the first-boot script before the
shared watcher (:mod:`cumulo.providers.cloud.notice_watch`), which calls
``instance_id()`` and ``notice()``. Standard library only.

IMDSv2, as AWS documents it: PUT ``/latest/api/token`` with
``X-aws-ec2-metadata-token-ttl-seconds`` gives a session token, sent as
``X-aws-ec2-metadata-token`` on every GET. ``/latest/meta-data/spot/instance-action``
answers 404 until AWS decides to take the instance back, then
``{"action": "terminate" | "stop" | "hibernate", "time": "2026-12-07T18:02:00Z"}``,
about two minutes ahead. The service's address is botocore's setting
``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (default http://169.254.169.254/), which a
test harness points at its own metadata server.
"""

import calendar
import json
import os
import time
import urllib.error
import urllib.request

_IMDS = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://169.254.169.254/").rstrip("/") + "/"
_token = {"value": "", "until": 0.0}


def _get(path: str) -> str:
    if time.time() > _token["until"]:
        req = urllib.request.Request(_IMDS + "latest/api/token", method="PUT",
                                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
        with urllib.request.urlopen(req, timeout=2) as r:  # noqa: S310 - the metadata service's own address
            _token["value"] = r.read().decode()
        _token["until"] = time.time() + 21000
    req = urllib.request.Request(_IMDS + "latest/" + path, headers={"X-aws-ec2-metadata-token": _token["value"]})
    with urllib.request.urlopen(req, timeout=2) as r:  # noqa: S310
        return r.read().decode()


def instance_id() -> str:
    """This instance's id (i-...)."""
    return _get("meta-data/instance-id").strip()


def notice() -> dict | None:
    """The spot interruption notice as {"action", "at": epoch seconds}, or None while there is none."""
    try:
        body = json.loads(_get("meta-data/spot/instance-action"))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        if exc.code == 401:  # the session token expired early: ask for a new one next time
            _token["until"] = 0.0
        raise OSError(f"metadata service answered {exc.code}") from None
    at = calendar.timegm(time.strptime(body["time"], "%Y-%m-%dT%H:%M:%SZ"))
    return {"action": body.get("action", "terminate"), "at": float(at)}
