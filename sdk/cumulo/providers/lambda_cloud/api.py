"""Lambda Cloud's REST API v1, as typed calls over cumulo's careful HTTP client.

Only the endpoints cumulo uses: instance types (with prices and regions that
have capacity now), launch, list, terminate, SSH keys and firewall rules.
Shapes follow Lambda's public documentation (see ../shared/DESIGN.md,
"Facts about the outside world"); errors come back as cumulo exceptions via
:data:`LAMBDA_ERRORS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dask.utils import parse_timedelta

from .. import config
from ..credentials import Secret, lambda_api_key
from ..exceptions import CapacityError, CredentialsError, ProviderError, QuotaError, SpecError
from ..http import DEFAULT_HINTS, ApiClient, ErrorMapping

__all__ = ["LAMBDA_ERRORS", "InstanceType", "LambdaApi", "choose_instance_type"]

LAMBDA_ERRORS = ErrorMapping(
    provider="Lambda Cloud",
    codes={
        "global/invalid-api-key": CredentialsError,
        "global/account-inactive": CredentialsError,
        "global/quota-exceeded": QuotaError,
        "instance-operations/launch/insufficient-capacity": CapacityError,
        "global/invalid-parameters": SpecError,
        "instance-operations/launch/": ProviderError,
    },
    hints={
        **DEFAULT_HINTS,
        CredentialsError: "Check LAMBDA_API_KEY (or your key file/keyring entry); cumulo shows only its last 4 "
        "characters. Create a new key in Lambda's dashboard if it was revoked.",
        CapacityError: "Capacity changes by the minute: try another region or shape, or again later.",
    },
)


@dataclass(frozen=True)
class InstanceType:
    """One Lambda instance type with its price and the regions that have capacity right now."""

    name: str
    description: str
    price_per_hour: float
    vcpus: int
    memory_gib: int
    gpus: int
    regions: tuple[str, ...]

    @property
    def tokens(self) -> set[str]:
        """Lower-case parts of the name ("gpu_8x_a100_80gb_sxm4" -> {"gpu", "8x", "a100", "80gb", "sxm4"})."""
        return set(self.name.lower().split("_"))

    def summary(self) -> str:
        """One line for the offer shown before launch."""
        return (f"{self.name} ({self.description or f'{self.gpus} GPU'}, {self.vcpus} vCPU, "
                f"{self.memory_gib} GiB) at ${self.price_per_hour:.2f}/h")


def _parse_types(data: dict[str, Any]) -> dict[str, InstanceType]:
    out = {}
    for name, entry in data.items():
        it = entry.get("instance_type", {})
        specs = it.get("specs", {})
        out[name] = InstanceType(
            name=it.get("name", name),
            description=it.get("description", ""),
            price_per_hour=float(it.get("price_cents_per_hour", 0)) / 100.0,
            vcpus=int(specs.get("vcpus", 0)),
            memory_gib=int(specs.get("memory_gib", 0)),
            gpus=int(specs.get("gpus", 0)),
            regions=tuple(r["name"] for r in entry.get("regions_with_capacity_available", [])),
        )
    return out


def _gpu_tokens(gpu: str) -> set[str]:
    return {t for t in re.split(r"[\s_\-]+", gpu.strip().lower()) if t}


def choose_instance_type(
    types: dict[str, InstanceType],
    *,
    gpu: str | None,
    instance_type: str | None,
    gpus_per_instance: int | None,
    region: str | None,
) -> tuple[InstanceType, str]:
    """Pick the cheapest matching instance type with capacity, and its region.

    Raises SpecError when nothing matches the request at all, and CapacityError
    naming the regions and shapes that do have capacity when the match has none.
    """
    if instance_type:
        if instance_type not in types:
            raise SpecError(f"Lambda has no instance type {instance_type!r}; known: {', '.join(sorted(types))}")
        candidates = [types[instance_type]]
    elif gpu:
        want = _gpu_tokens(gpu) | {f"{gpus_per_instance or 1}x"}
        candidates = [t for t in types.values() if want <= t.tokens]
        if not candidates:
            models = sorted({tok for t in types.values() for tok in t.tokens} - {"gpu"} - {f"{n}x" for n in range(1, 17)})
            raise SpecError(
                f"no Lambda instance type has {gpus_per_instance or 1}x {gpu}; GPU models offered: "
                f"{', '.join(models)} (or pass instance_type=, one of {', '.join(sorted(types))})"
            )
    else:
        raise SpecError("say which GPU you want: connect('lambda', gpu='A100') or instance_type='gpu_1x_a100'")
    usable = [(t.price_per_hour, t.name, t) for t in candidates if (region in t.regions if region else t.regions)]
    if usable:
        best = min(usable)[2]
        return best, region or best.regions[0]
    # Nothing matched has capacity where asked: say where there is some.
    where = region or "any region"
    lines = []
    for t in sorted(candidates, key=lambda t: t.price_per_hour):
        if t.regions:
            lines.append(f"{t.name} has capacity in {', '.join(t.regions)}")
    others = sorted((t for t in types.values() if t.regions and t not in candidates), key=lambda t: t.price_per_hour)
    if others:
        lines.append("shapes with capacity now: " + ", ".join(
            f"{t.name} (${t.price_per_hour:.2f}/h; {', '.join(t.regions)})" for t in others[:6]))
    names = ", ".join(t.name for t in candidates)
    raise CapacityError(
        f"no capacity for {names} in {where} right now. "
        + ("; ".join(lines) + ". " if lines else "No shape has capacity anywhere right now. ")
        + "Pass region= or instance_type= accordingly, or try again later."
    )


class LambdaApi:
    """The Lambda Cloud API endpoints cumulo uses, configured from ``cumulo.lambda.*``."""

    def __init__(self, secret: Secret | None = None, *, base_url: str | None = None) -> None:
        self.secret = secret or lambda_api_key()
        self.client = ApiClient(
            base_url or config.get("lambda.base-url"),
            secret=self.secret,
            errors=LAMBDA_ERRORS,
            max_retries=int(config.get("lambda.max-retries")),
            timeout=float(parse_timedelta(config.get("lambda.request-timeout"))),
            min_interval=float(config.get("lambda.request-interval")),
            intervals={"/instance-operations/launch": float(config.get("lambda.launch-interval"))},
        )

    def __repr__(self) -> str:
        return f"LambdaApi({self.client.base_url!r}, key {self.secret.hint})"

    async def __aenter__(self) -> LambdaApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def instance_types(self) -> dict[str, InstanceType]:
        """Every instance type with its price and the regions with capacity now (capacity is not reserved)."""
        return _parse_types((await self.client.request("GET", "/instance-types"))["data"])

    async def launch(
        self, *, region: str, instance_type: str, name: str, quantity: int, ssh_key: str, user_data: str
    ) -> list[str]:
        """Launch ``quantity`` instances named ``name``; their ids. Never retried after it may have applied."""
        body = {
            "region_name": region,
            "instance_type_name": instance_type,
            "ssh_key_names": [ssh_key],
            "file_system_names": [],
            "quantity": quantity,
            "name": name,
            "user_data": user_data,
        }
        return list((await self.client.request("POST", "/instance-operations/launch", json=body))["data"]["instance_ids"])

    async def instances(self) -> list[dict[str, Any]]:
        """All instances of the account (any status Lambda still lists)."""
        return list((await self.client.request("GET", "/instances"))["data"])

    async def terminate(self, instance_ids: list[str]) -> list[dict[str, Any]]:
        """Ask Lambda to terminate instances (safe to repeat: retried on 5xx and timeouts)."""
        body = {"instance_ids": list(instance_ids)}
        data = await self.client.request("POST", "/instance-operations/terminate", json=body, idempotent=True)
        return list(data["data"].get("terminated_instances", []))

    async def ssh_key_names(self) -> list[str]:
        """Names of the SSH keys registered with the account."""
        return [k["name"] for k in (await self.client.request("GET", "/ssh-keys"))["data"]]

    async def firewall_rules(self) -> list[dict[str, Any]]:
        """The account's inbound firewall rules."""
        return list((await self.client.request("GET", "/firewall-rules"))["data"])

    async def set_firewall_rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace the account's inbound firewall rules (PUT replaces the whole list)."""
        await self.client.request("PUT", "/firewall-rules", json={"data": rules})
