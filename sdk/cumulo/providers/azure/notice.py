"""Runs on an Azure VM: its name, and a Spot eviction notice, from the Instance Metadata Service's Scheduled Events.

Not imported by cumulo: its source is embedded in the first-boot script before the
shared watcher (:mod:`cumulo.providers.cloud.notice_watch`), which calls
``instance_id()`` and ``notice()``. Standard library only. The adapter writes
``cumulo.azure.metadata-endpoint`` into ``ENDPOINT`` below (the VM has no cumulo
configuration to read it from); a test harness points it at its own server.

Azure's Instance Metadata Service, as Microsoft documents it (every request carries
``Metadata: true``, and a request through a proxy or without the header is refused):

- ``GET {ENDPOINT}/metadata/instance/compute/name?api-version=2021-02-01&format=text``
  answers the VM's name (what ARM calls it, and what cumulo recorded it by);
- ``GET {ENDPOINT}/metadata/scheduledevents?api-version=2020-07-01`` answers
  ``{"DocumentIncarnation": n, "Events": [...]}``; a Spot eviction is an event with
  ``EventType`` "Preempt", ``Resources`` listing the VMs it concerns (by name),
  ``EventStatus`` "Scheduled" (or "Started"), and ``NotBefore`` the earliest time
  it happens as an RFC 1123 date ("Mon, 07 Dec 2026 18:02:00 GMT"; empty once
  started), about 30 s ahead. The first request enables the service for the VM.
"""

import calendar
import json
import time
import urllib.error
import urllib.request

ENDPOINT = "http://169.254.169.254"
_NAME = {"value": ""}


def _get(path: str) -> str:
    req = urllib.request.Request(ENDPOINT.rstrip("/") + path, headers={"Metadata": "true"})
    # the metadata service is never reached through a proxy (Azure refuses proxied requests)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=5) as r:
            return r.read().decode()
    except urllib.error.HTTPError as exc:
        raise OSError(f"metadata service answered {exc.code}") from None


def instance_id() -> str:
    """This VM's name (cumulo's record of the instance carries it)."""
    if not _NAME["value"]:
        _NAME["value"] = _get("/metadata/instance/compute/name?api-version=2021-02-01&format=text").strip()
    return _NAME["value"]


def _when(not_before: str) -> float:
    if not not_before:  # started: now
        return time.time()
    return float(calendar.timegm(time.strptime(not_before, "%a, %d %b %Y %H:%M:%S GMT")))


def notice() -> dict | None:
    """A Preempt event for this VM as {"action": "preempt", "at": epoch seconds}, or None while there is none."""
    raw = _get("/metadata/scheduledevents?api-version=2020-07-01")
    me = instance_id().lower()
    try:  # the watcher goes on polling after an OSError; anything else would end it
        for event in json.loads(raw or "{}").get("Events") or []:
            if event.get("EventType") != "Preempt":
                continue
            if me in [str(r).lower() for r in event.get("Resources") or []]:
                return {"action": "preempt", "at": _when(str(event.get("NotBefore") or ""))}
    except (ValueError, AttributeError, TypeError) as exc:
        raise OSError(f"unreadable Scheduled Events ({type(exc).__name__})") from None
    return None
