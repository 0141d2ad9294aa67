"""Lambda as its published API is (issue 23): the spec's routes and error codes, per-cluster firewall
rulesets, ownership by tags, account errors, upstream "try again" errors, and launch pacing.

Against the emulator, which enforces the facts in lambda_spec.py.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import cumulo
import dask
import pytest
from cumulo.exceptions import AccountError, CredentialsError, ProviderError, SpecError
from cumulo.life.registry import Registry
from cumulo.providers.cloud.adapter import Mark
from cumulo.providers.lambda_cloud import LambdaProvider
from cumulo.providers.lambda_cloud import api as api_module
from cumulo.providers.lambda_cloud.adapter import LambdaAdapter
from cumulo.providers.lambda_cloud.api import LAMBDA_ERRORS, LambdaApi
from cumulo.providers.lambda_cloud.tags import tags_of
from cumulo.security.credentials import Secret
from cumulo.spec import ClusterSpec

from . import lambda_emulator, lambda_spec
from .conftest import wait_for
from .lambda_emulator import Emulator
from .lambda_support import close, emulator, no_orphans, run, start  # noqa: F401,F811  (fixtures)

pytestmark = pytest.mark.timeout(300)


def _spec(**kw) -> ClusterSpec:  # type: ignore[no-untyped-def]
    kw.setdefault("gpu", "A10")
    kw.setdefault("workers", 1)
    return ClusterSpec(provider="lambda", **kw)


def _template(node: ast.expr) -> str | None:
    """A request path literal, with each f-string field as ``{}``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def test_the_client_and_the_emulator_stay_inside_the_spec() -> None:
    """Every request the client sends, every route the emulator serves and every error code the client maps
    is in lambda_spec.py: neither can use something the spec does not have without this failing."""
    client_routes = set()
    for node in ast.walk(ast.parse(inspect.getsource(api_module))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "request" and len(node.args) >= 2:
            method, path = node.args[0], _template(node.args[1])
            if isinstance(method, ast.Constant) and path is not None:
                client_routes.add((method.value, path))
    assert len(client_routes) >= 12, client_routes  # the parse found the client's calls
    assert client_routes <= lambda_spec.ROUTES, client_routes - lambda_spec.ROUTES
    source = inspect.getsource(lambda_emulator.Emulator._handle)
    served = {(m, r + ("{}" if how == "startswith" else ""))
              for m, how, r in re.findall(r'method == "(\w+)" and route(?: == |\.(startswith)\()"([^"]+)"', source)}
    served |= {("POST", "/instance-operations/launch"), ("POST", "/instance-operations/terminate")}
    assert served <= lambda_spec.ROUTES, served - lambda_spec.ROUTES
    for code in LAMBDA_ERRORS.codes:
        assert any(c == code or (code.endswith("/") and c.startswith(code)) for c in lambda_spec.ERROR_CODES), code
    for code in (*LAMBDA_ERRORS.code_hints, *LAMBDA_ERRORS.retry):
        assert any(c == code or (code.endswith("/") and c.startswith(code)) for c in lambda_spec.ERROR_CODES), code


@pytest.mark.parametrize("code, what", [("global/invalid-address", "billing address"),
                                        ("global/account-inactive", "not active")])
def test_an_account_refusal_names_what_to_fix_on_the_account_not_the_key(emulator: Emulator, code: str,
                                                                          what: str) -> None:
    emulator.faults.account_error = code
    with pytest.raises(AccountError) as info:
        run(start(_spec()))
    text = str(info.value)
    assert code in text and what in text and "Your API key is fine" in text
    assert "LAMBDA_API_KEY" not in text and emulator.api_key not in text
    assert not isinstance(info.value, CredentialsError)
    # and only a refused key says to check the key
    emulator.faults.account_error = None
    with dask.config.set({"cumulo.lambda.max-retries": 0}):
        async def bad_key() -> None:
            async with LambdaApi(Secret("not-the-key-0000", source="test")) as api:
                await api.instance_types()
        with pytest.raises(CredentialsError, match="LAMBDA_API_KEY"):
            run(bad_key())


def test_upstream_errors_that_say_try_again_are_retried_with_backoff(emulator: Emulator) -> None:
    emulator.faults.provider_errors = 2

    async def go() -> int:
        async with LambdaApi() as api:
            return len(await api.instance_types())

    assert run(go()) == len(lambda_emulator.PRICES)
    answers = [s for m, p, s in emulator.requests if p.endswith("/instance-types")]
    assert answers == [503, 503, 200]


def test_an_ssh_key_already_gone_is_gone_not_an_error(emulator: Emulator) -> None:
    async def go() -> tuple[bool, bool]:
        async with LambdaApi() as api:
            stored = await api.add_ssh_key("cumulo-race", "ssh-ed25519 AAAAC3Nz race")
            first = await api.delete_ssh_key(stored["id"])
            again = await api.delete_ssh_key(stored["id"])  # a second teardown racing the first
            return first, again

    assert run(go()) == (True, False)
    assert [(p.startswith("/api/v1/ssh-keys/"), s) for m, p, s in emulator.requests if m == "DELETE"] == [
        (True, 200), (True, 400)]  # the real API's 400 global/invalid-parameters, read as "gone"


def test_a_region_without_firewalls_is_refused_when_asked_and_skipped_when_chosen_by_price(
        emulator: Emulator) -> None:
    with pytest.raises(SpecError, match="no firewall rules in us-south-1.*choose another region"):
        run(start(_spec(region="us-south-1")))
    assert emulator.launches == 0 and not emulator.rulesets and Registry().list() == []
    lines: list[str] = []

    async def go() -> None:
        s = await start(_spec(), provider=LambdaProvider(progress=lines.append))
        assert {i.region for i in emulator.live()} == {"us-east-1"}  # us-south-1 is listed first, and cheapest
        await close(s)

    run(go())
    assert any("not considering us-south-1: Lambda applies no firewall rules there" in line for line in lines)


def test_a_ruleset_in_use_is_waited_out_and_leftovers_are_swept(emulator: Emulator) -> None:
    emulator.terminate_seconds = 1.0  # Lambda holds the ruleset until the instance is really gone
    registry = Registry()
    mine = f"cumulo-{registry.installation_id}-feedbeef0003-scheduler-tls"
    theirs = "cumulo-0badc0de-feedbeef0004-scheduler-tls"

    async def go() -> None:
        async with LambdaApi() as api:
            rid = await api.create_firewall_ruleset(name=mine, region="us-west-1", rules=[])
            await api.create_firewall_ruleset(name=theirs, region="us-west-1", rules=[])
            iid = (await api.launch(region="us-west-1", instance_type="gpu_1x_a10", name="cumulo-x-y-head",
                                    ssh_key="emulator-key", user_data="#!/bin/bash\ntrue\n",
                                    firewall_rulesets=[rid]))[0]
            await api.terminate([iid])
            adapter = LambdaAdapter(api)
            started = time.monotonic()
            assert await adapter.remove_rules([mine]) == 1  # answered 409 in use until the instance went
            assert time.monotonic() - started >= 0.5
        statuses = [s for m, p, s in emulator.requests if m == "DELETE" and "/firewall-rulesets/" in p]
        assert statuses[0] == 409 and statuses[-1] == 200
        assert emulator.cumulo_rulesets() == [theirs]
        # another leftover of this installation (a crashed cluster): the sweep removes it, reports the other's
        async with LambdaApi() as api:
            await api.create_firewall_ruleset(name=mine, region="us-east-1", rules=[])
        found = await LambdaProvider().sweep_orphans(registry, dry_run=False)
        rulesets = {o.name: o.action for o in found if o.kind == "firewall-rule"}
        assert rulesets == {mine: "removed"}
        assert emulator.cumulo_rulesets() == [theirs], "another installation's ruleset is left alone"
        emulator.rulesets.clear()  # not cumulo's to remove: clean up for the orphan check

    run(go())


def test_a_renamed_instance_is_still_found_by_its_tags(emulator: Emulator) -> None:
    registry = Registry()

    async def go() -> None:
        s = await start(_spec(workers=2), registry=registry)
        worker = next(i for i in emulator.live() if i.name.endswith("-worker-1"))
        worker.name = "my-renamed-box"  # renamed in Lambda's dashboard
        # and an instance of this installation's cluster that was never recorded, under a name cumulo never gives
        async with LambdaApi() as api:
            stray = (await api.launch(region="us-east-1", instance_type="gpu_1x_a10", name="whatever-name",
                                      ssh_key="emulator-key", user_data="#!/bin/bash\ntrue\n",
                                      tags=tags_of(Mark(registry.installation_id, "feedbeef0005", "head"))))[0]
            plain = (await api.launch(region="us-east-1", instance_type="gpu_1x_a10", name="someone-elses-box",
                                      ssh_key="emulator-key", user_data="#!/bin/bash\ntrue\n"))[0]
        found = await LambdaProvider().sweep_orphans(registry, dry_run=False)
        assert {o.resource_id: o.action for o in found if o.kind == "instance"} == {stray: "terminated"}
        await close(s)
        assert {i.id for i in emulator.live()} == {plain}, "the renamed worker went with its cluster"
        emulator.handle("POST", "/api/v1/instance-operations/terminate", f"Bearer {emulator.api_key}",
                        {"instance_ids": [plain]})
        assert emulator.wait_idle(10)

    run(go())


@pytest.mark.slow
def test_eight_instances_launch_at_the_specs_real_pace(emulator: Emulator) -> None:
    """One launch per 12 s and five in any minute, as the spec allows, enforced by the emulator (429 otherwise)."""
    emulator.launch_interval, emulator.launches_per_minute = lambda_spec.LAUNCH_INTERVAL, \
        lambda_spec.LAUNCHES_PER_MINUTE
    config = {"cumulo.lambda.launch-interval": lambda_spec.LAUNCH_INTERVAL,
              "cumulo.lambda.launches-per-minute": lambda_spec.LAUNCHES_PER_MINUTE,
              "cumulo.cloud.workers-timeout": 180, "cumulo.cloud.confirm-above-per-hour": 100}

    async def go() -> None:
        s = await start(_spec(workers=8))
        assert len(emulator.live()) == 8
        await close(s)

    with dask.config.set(config):
        run(go())
    launches = [s for m, p, s in emulator.requests if p.endswith("/launch")]
    assert launches == [200] * 8, "no launch was refused for pace"


def test_an_image_is_checked_in_preflight_named_in_the_offer_and_booted(emulator: Emulator) -> None:
    with pytest.raises(SpecError, match="'ubuntu-22-04' is not offered in europe-central-1.*us-east-1, us-west-1"):
        run(start(_spec(image="ubuntu-22-04", region="europe-central-1")))
    assert emulator.launches == 0 and Registry().list() == []
    lines: list[str] = []

    async def go() -> None:
        s = await start(_spec(image="lambda-stack-22-04"), provider=LambdaProvider(progress=lines.append))
        (inst,) = emulator.live()
        assert inst.image == "img-lambda-stack-22-04-110-us-east-1"  # the family's latest version, in its region
        await close(s)

    run(go())
    (offer,) = [line for line in lines if line.startswith("offer:")]
    assert "image: Lambda Stack 22.04 1.1.0 (lambda-stack-22-04, id img-lambda-stack-22-04-110-us-east-1)" in offer


def test_a_preempted_worker_mid_pipeline_leaves_the_result_right_and_stops_billing(emulator: Emulator) -> None:
    quick = {"cumulo.guards.watch-interval": "0.2s", "cumulo.guards.interval": "0.5s",
             "cumulo.widgets.cell-line-on-connect": False}
    with dask.config.set(quick):
        cluster = cumulo.connect("lambda", gpu="A10", workers=3, name="preempted")
    try:
        client = cluster.client
        assert Registry().get(cluster.id).rate_per_hour == pytest.approx(3 * 0.75)
        worker = next(i for i in emulator.live() if i.name.endswith("-worker-1"))

        def square_slowly(i: int) -> int:  # local: sent by value (the instances cannot import this module)
            import time

            time.sleep(0.1)
            return i * i

        futures = client.map(square_slowly, range(60), pure=False)
        wait_for(lambda: sum(f.status == "finished" for f in futures) >= 10, timeout=60, what="the pipeline to run")
        emulator.preempt(worker.id)  # Lambda takes it back mid-way, without notice
        assert sum(client.gather(futures)) == sum(i * i for i in range(60)), "dask recomputed what it held"
        # the kernel that launched it launches a replacement (Lambda has no spot market: the same shape)
        (replaced,) = wait_for(lambda: [m for _, kind, m in Registry().events(cluster.id) if kind == "replaced"],
                               timeout=90, what="the preempted worker to be replaced")
        states = {r.resource_id: r.state for r in Registry().resources(cluster_id=cluster.id) if r.kind == "instance"}
        assert states[worker.id] == "preempted" and sorted(states.values()).count("preempted") == 1
        (line,) = [m for _, kind, m in Registry().events(cluster.id) if kind == "preempted"]
        assert f"instance {worker.id} ({worker.name}) was preempted by Lambda" in line
        assert "$0.75/h stops billing" in line and line.endswith("A replacement is being launched (same market, "
                                                                 "then the fallback).")
        (new,) = [i for i in emulator.live() if i.name.endswith("-worker-3")]
        assert new.id in replaced and "$0.75/h" in replaced and len(emulator.live()) == 3
        # the bill: 3 instances, 2 from the preemption seen to the replacement's request, 3 again from then on
        row = Registry().get(cluster.id)
        rates = [rate for _, rate in json.loads(row.rate_changes or "[]")]
        assert rates[-2:] == [pytest.approx(2 * 0.75), pytest.approx(3 * 0.75)] and row.rate_per_hour == pytest.approx(
            3 * 0.75)
        assert len({w["host"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}) == 3
    finally:
        cluster.close()
    assert [s for m, p, s in emulator.requests if p.endswith("/terminate")] == [200], "the rest, in one request"
    assert Registry().get(cluster.id).state == "closed" and emulator.instances[worker.id].status == "preempted"


def test_the_default_host_is_cloud_lambda_ai_and_the_old_one_works_where_configured() -> None:
    """The spec marks cloud.lambdalabs.com deprecated: the shipped default is cloud.lambda.ai; a configured URL
    (the old host, the emulator) is used as it is."""
    import yaml

    fragment = yaml.safe_load((Path(api_module.__file__).parent / "config.yaml").read_text())
    assert fragment["defaults"]["base-url"] == "https://cloud.lambda.ai/api/v1"
    with dask.config.set({"cumulo.lambda.base-url": "https://cloud.lambdalabs.com/api/v1"}):
        api = LambdaApi(Secret("secret_0000000000000000", source="test"))
        assert api.client.base_url == "https://cloud.lambdalabs.com/api/v1"
        run(api.client.aclose())


@pytest.mark.parametrize("status, turn", [("preempted", Emulator.preempt), ("unhealthy", Emulator.make_unhealthy)])
def test_an_instance_preempted_or_unhealthy_while_booting_fails_the_launch_at_once(
        emulator: Emulator, status: str, turn: Callable[[Emulator, str], None]) -> None:
    emulator.boot_seconds = 30.0  # it would boot long after the check below

    async def go() -> None:
        launch = asyncio.ensure_future(start(_spec()))
        deadline = time.monotonic() + 20
        while not emulator.live() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        turn(emulator, emulator.live()[0].id)
        started = time.monotonic()
        with pytest.raises(ProviderError, match=f"became {status} while booting"):
            await launch
        assert time.monotonic() - started < 10, "not after the boot timeout"

    run(go())
