"""Bad input is refused before anything starts, with a SpecError (or ConnectError) that says what to pass."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import dask
import pytest

import cumulo
import cumulo.life.registry
import cumulo.train
from cumulo.exceptions import ConnectError, CumuloError, SpecError
from cumulo.spec import ClusterSpec, duration_seconds, probe_loopback

ROOT = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- ClusterSpec fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"budget": math.nan}, "budget=nan must be a positive number of dollars"),
        ({"budget": math.inf}, "budget=inf must be a positive number of dollars"),
        ({"budget": -math.inf}, "budget=-inf"),
        ({"gpu": 123}, "gpu=123 must be a string, not int: pass e.g. gpu='A100'"),
        ({"gpu": "  "}, "gpu='  ' is blank: pass e.g. gpu='A100'"),
        ({"idle_timeout": "1e400s"}, "idle_timeout='1e400s' is not a finite duration: use e.g. idle_timeout='20m'"),
        ({"idle_timeout": math.inf}, "is not a finite duration"),
        ({"idle_timeout": "  "}, "is not a duration"),
        ({"idle_timeout": "-5m"}, "must be a positive duration"),
        ({"spot": "no"}, "spot='no' must be True, False or 'only'"),
        ({"region": {"name": "us-east-1"}}, "region={'name': 'us-east-1'} must be a string, not dict"),
        ({"instance_type": ""}, "instance_type='' is blank"),
        ({"provider": ""}, "provider='' is blank"),
        ({"memory_limit": math.inf}, "memory_limit=inf is not a size"),
        ({"memory_limit": True}, "memory_limit=True is not a size"),
        ({"options": ["confirm"]}, "options must be a dict"),
    ],
)
def test_bad_fields_are_spec_errors_that_say_what_to_pass(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError) as info:
        ClusterSpec(**fields)
    assert words in str(info.value)


def test_good_fields_are_normalised() -> None:
    spec = ClusterSpec(gpu=" A100 ", region=" us-east-1", idle_timeout="20m", budget=5, spot=True)
    assert (spec.gpu, spec.region, spec.idle_timeout) == ("A100", "us-east-1", 1200.0)
    assert (spec.budget, spec.spot) == (5.0, True)
    assert ClusterSpec(idle_timeout=90).idle_timeout == 90.0


def test_duration_seconds_never_leaks_parse_timedelta_errors() -> None:
    assert duration_seconds("20m") == 1200.0 and duration_seconds(" 1.5h ") == 5400.0 and duration_seconds(3) == 3.0
    assert duration_seconds("-1s") == -1.0  # the caller decides whether negative is allowed
    for bad in ("forever", "", "  ", "1e400s", math.nan, math.inf, None, True, [1], "--1s"):
        with pytest.raises(ValueError, match="duration"):
            duration_seconds(bad)


def test_require_workers_refuses_zero_workers() -> None:
    """workers=0 is a valid spec (scaled to zero) but not a cluster to start where nothing would run."""
    ClusterSpec(workers=1).require_workers()
    ClusterSpec().require_workers()
    with pytest.raises(SpecError, match=r"workers=0 starts a cluster with no workers, and .*pass workers=1 or more"):
        ClusterSpec(workers=0).require_workers()
    with pytest.raises(SpecError, match="the scheduler's instance bills"):
        ClusterSpec(provider="lambda", workers=0).require_workers("the scheduler's instance bills")


# -- train.torch arguments ---------------------------------------------------------------------


def _train(x: int, *, lr: float = 0.1) -> float:
    return x * lr


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        ((), {"workers": 2}, "workers=2 must be a non-empty list of worker addresses"),
        ((), {"workers": "tcp://127.0.0.1:1"}, "must be a non-empty list of worker addresses"),
        ((), {"workers": []}, "must be a non-empty list of worker addresses"),
        ((1,), {"epochs": 3}, "cannot take these arguments"),
        ((), {}, "missing a required argument: 'x'"),
        ((1,), {"timeout": "1e400s"}, "timeout='1e400s' is not a finite duration"),
        ((1,), {"timeout": "0s"}, "must be a positive duration"),
        ((1,), {"backend": 3}, "backend=3 must be a torch.distributed backend name"),
        ((1,), {"result": "rank1"}, "result must be 'all' or 'rank0'"),
    ],
)
def test_train_torch_bad_arguments_are_spec_errors(args: tuple[Any, ...], kwargs: dict[str, Any], words: str) -> None:
    """Checked before torch is imported or a worker is asked anything (the cluster here is not even one)."""
    with pytest.raises(SpecError) as info:
        cumulo.train.torch(_train, object(), *args, **kwargs)
    assert words in str(info.value)


def test_train_torch_names_its_own_options_when_fn_refuses_an_argument() -> None:
    with pytest.raises(SpecError) as info:
        cumulo.train.torch(_train, object(), 1, epochs=3)
    text = str(info.value)
    assert "_train(x, *, lr=0.1) cannot take these arguments" in text
    assert "workers=[worker addresses]" in text and "result=" in text and "backend=" in text and "timeout=" in text


def test_train_torch_refuses_a_missing_function() -> None:
    with pytest.raises(SpecError, match="training function first"):
        cumulo.train.torch(object(), object())  # type: ignore[arg-type]


# -- loopback probe ----------------------------------------------------------------------------


#: Connection attempts wait this long here, so that a refusal "at once" is told from one that waited for a timeout
#: by a bound (half of it) that a busy machine never reaches; speed itself is benchmarks/' business.
SLOW_CONNECT = {"distributed.comm.timeouts.connect": "60s"}


def test_probe_loopback_fails_at_once_when_nothing_listens() -> None:
    port = closed_port()
    t0 = time.perf_counter()
    with dask.config.set(SLOW_CONNECT), pytest.raises(ConnectError) as info:
        probe_loopback(f"tcp://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 30
    assert f"nothing listens at tcp://127.0.0.1:{port}" in str(info.value)
    assert "Start the scheduler first" in str(info.value)


def test_probe_loopback_passes_a_listener_and_leaves_other_hosts_alone() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        probe_loopback(f"tcp://127.0.0.1:{server.getsockname()[1]}")
        probe_loopback(f"tcp://localhost:{server.getsockname()[1]}")
    probe_loopback("tcp://192.0.2.1:8786")  # not loopback: not probed (would time out, not refuse)
    probe_loopback(f"ucx://127.0.0.1:{closed_port()}")  # not a TCP scheme: not probed
    with pytest.raises(SpecError):
        probe_loopback("127.0.0.1:8786")


def test_address_provider_preflight_refuses_a_closed_loopback_port() -> None:
    import asyncio

    from cumulo.providers.address import AddressProvider

    port = closed_port()
    spec = ClusterSpec(provider="address", address=f"tcp://127.0.0.1:{port}")
    t0 = time.perf_counter()
    with dask.config.set(SLOW_CONNECT), pytest.raises(ConnectError, match="nothing listens"):
        asyncio.run(AddressProvider().preflight(spec))
    assert time.perf_counter() - t0 < 30


@pytest.mark.timeout(60)
def test_connect_to_a_closed_loopback_port_fails_at_once() -> None:
    port = closed_port()
    t0 = time.perf_counter()
    with dask.config.set(SLOW_CONNECT), \
            pytest.raises(ConnectError, match=f"nothing listens at tcp://127.0.0.1:{port}"):
        cumulo.connect(f"tcp://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 30
    assert cumulo.life.registry.Registry().list() == []


@pytest.mark.timeout(60)
def test_connect_with_zero_local_workers_is_refused() -> None:
    t0 = time.perf_counter()
    try:
        cluster = cumulo.connect(workers=0)
    except SpecError as exc:
        assert "workers=0 starts a cluster with no workers" in str(exc)
    else:
        cluster.close()
        pytest.fail("connect(workers=0) started a cluster that nothing could run on")
    assert time.perf_counter() - t0 < 10.0
    assert cumulo.life.registry.Registry().list() == []


# -- scripts without `if __name__ == "__main__":` -------------------------------------------------

GUARD_ADVICE = 'Wrap the code that calls cumulo.connect() in `if __name__ == "__main__":`'


def run_script(tmp_path: Path, source: str, *, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``source`` as tmp_path/job.py; on timeout kill its whole process group (spawned workers too)."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(source))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{script.name} still ran after {timeout:g}s; stderr:\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        ("from cumulo._spawn import check_main_guard\ncheck_main_guard()\n", True),
        ("from cumulo._spawn import check_main_guard\ndef main():\n    check_main_guard()\nmain()\n", True),
        ('from cumulo._spawn import check_main_guard\nif __name__ == "__main__":\n    check_main_guard()\n', False),
        ('from cumulo._spawn import check_main_guard\ndef main():\n    check_main_guard()\n\n'
         'if __name__ == "__main__":\n    main()\n', False),
        ("from cumulo._spawn import check_main_guard\ncheck_main_guard(starts_processes=False)\n", False),
        ("import dask\nfrom cumulo._spawn import check_main_guard\n"
         "with dask.config.set({'distributed.worker.multiprocessing-method': 'fork'}):\n    check_main_guard()\n",
         False),
    ],
)
def test_check_main_guard_in_the_main_process(tmp_path: Path, source: str, refused: bool) -> None:
    out = run_script(tmp_path, source)
    if refused:
        assert out.returncode != 0 and "SpecError" in out.stderr, out.stderr
        assert GUARD_ADVICE in out.stderr and "job.py, line" in out.stderr
    else:
        assert out.returncode == 0, out.stderr


def test_check_main_guard_passes_python_dash_c() -> None:
    subprocess.run([sys.executable, "-c", "from cumulo._spawn import check_main_guard; check_main_guard()"],
                   check=True, timeout=60)


def test_check_main_guard_follows_what_spawn_re_runs_for_python_dash_m(tmp_path: Path) -> None:
    """`python -m job` is re-run by spawn like a script; a package's __main__.py is not."""
    body = "from cumulo._spawn import check_main_guard\ncheck_main_guard()\n"
    (tmp_path / "job.py").write_text(body)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "__main__.py").write_text(body)
    module = subprocess.run([sys.executable, "-m", "job"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert module.returncode != 0 and GUARD_ADVICE in module.stderr, module.stderr
    package = subprocess.run([sys.executable, "-m", "pkg"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert package.returncode == 0, package.stderr


def test_check_main_guard_in_a_spawned_child_re_running_the_script(tmp_path: Path) -> None:
    """The child side: spawn re-runs the top level as __mp_main__; connecting from there is refused."""
    out = run_script(tmp_path, f"""
        import multiprocessing
        from cumulo._spawn import check_main_guard

        def work():
            pass

        if __name__ == "__mp_main__":
            try:
                check_main_guard(starts_processes=False)
            except Exception as exc:
                open({str(tmp_path / "child.txt")!r}, "w").write(type(exc).__name__ + ": " + str(exc))

        if __name__ == "__main__":
            check_main_guard(starts_processes=False)  # the parent itself is fine
            p = multiprocessing.get_context("spawn").Process(target=work)
            p.start()
            p.join()
    """)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "child.txt").read_text()
    assert text.startswith("SpecError: ") and GUARD_ADVICE in text


@pytest.mark.timeout(90)
def test_a_script_without_the_main_guard_fails_fast_and_leaves_no_row(tmp_path: Path, registry_path: Path) -> None:
    t0 = time.perf_counter()
    out = run_script(tmp_path, timeout=45, source="""
        import cumulo
        cluster = cumulo.connect(workers=2)
        print(cluster.client.submit(sum, [1, 2]).result())
        cluster.close()
    """)
    elapsed = time.perf_counter() - t0
    assert out.returncode != 0
    assert GUARD_ADVICE in out.stderr, out.stderr
    assert out.stderr.count("Traceback") == 1, out.stderr  # one error, not one per worker
    assert elapsed < 30, elapsed
    assert cumulo.life.registry.Registry(registry_path).list() == []


def test_errors_here_are_cumulo_errors() -> None:
    assert issubclass(SpecError, CumuloError) and issubclass(ConnectError, CumuloError)


# -- connect()'s keyword arguments: dask's names, typos (issue 21) --------------------------------


def test_dask_argument_names_mean_the_same_as_the_spec_fields() -> None:
    from cumulo.spec import spec_arguments

    assert spec_arguments({"n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GiB"}) == {
        "workers": 2, "threads_per_worker": 1, "memory_limit": "1GiB"}
    with pytest.raises(SpecError, match="n_workers= and workers= both given"):
        spec_arguments({"n_workers": 2, "workers": 3})


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"budgett": 5}, "unknown argument budgett= (did you mean 'budget'?)"),
        ({"worker": 2}, "(did you mean 'workers'?)"),
        ({"idle": "20m"}, "it accepts "),
        ({"nme": "etl"}, "(did you mean 'name'?)"),  # connect()'s own keywords count as accepted
        ({"address": "tcp://127.0.0.1:1"}, "pass the target as its first argument"),
    ],
)
def test_unknown_connect_arguments_name_the_nearest_accepted_one(arguments: dict[str, Any], words: str) -> None:
    from cumulo.spec import spec_arguments

    with pytest.raises(SpecError) as info:
        spec_arguments(arguments, also=("name", "security", "confirm"))
    assert words in str(info.value)
    assert "budget" in str(info.value) or "first argument" in str(info.value)  # the accepted names are listed


def test_an_unknown_argument_is_named_but_its_value_never_shown() -> None:
    from cumulo.spec import spec_arguments

    with pytest.raises(SpecError) as info:
        spec_arguments({"lambda_api_kee": "secret-value-123"})
    assert "lambda_api_kee=" in str(info.value) and "secret-value-123" not in str(info.value)


def test_a_provider_with_options_of_its_own_gets_the_other_arguments() -> None:
    from cumulo.spec import spec_arguments

    assert spec_arguments({"n_workers": 2, "worker_cores": 4}, others_allowed=True) == {
        "workers": 2, "worker_cores": 4}


def test_did_you_mean() -> None:
    from cumulo.spec import did_you_mean

    assert did_you_mean("lamda", ["local", "lambda", "ssh"]) == " (did you mean 'lambda'?)"
    assert did_you_mean("LOCAL", ["local", "lambda"]) == " (did you mean 'local'?)"
    assert did_you_mean("mars", ["local", "lambda", "ssh"]) == ""


# -- a script read from standard input cannot start spawned workers (issue 21) --------------------


def test_a_script_from_standard_input_is_told_why_local_workers_cannot_start(registry_path: Path) -> None:
    """`python - <<EOF` with connect(): a cumulo error that says why and what to do, not 'Nanny failed to start'."""
    script = 'import cumulo\nif __name__ == "__main__":\n    cumulo.connect(workers=1)\n'
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "SpecError: cumulo.connect() cannot start local worker processes" in out.stderr, out.stderr
    assert "read from standard input" in out.stderr and "python job.py" in out.stderr
    assert "Nanny failed to start." not in out.stderr.replace("'Nanny failed to start'", "")
    assert out.stderr.count("Traceback") == 1 and time.monotonic() - started < 60
    assert cumulo.life.registry.Registry(registry_path).list() == []


def test_standard_input_may_still_attach_to_a_running_scheduler() -> None:
    """Only starting local worker processes needs a file: the check is not made for other providers."""
    script = ("from cumulo._spawn import check_main_guard\ncheck_main_guard(starts_processes=False)\n"
              "print('passed')\n")
    out = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "passed" in out.stdout, out.stderr


def test_local_workers_that_die_at_start_are_a_provider_error_saying_what_to_check(tmp_path: Path) -> None:
    """A script whose top level cannot run again in a worker: distributed's bare 'Nanny failed to start'
    becomes a ProviderError that says where the worker's own error went and what commonly causes it."""
    out = run_script(tmp_path, textwrap.dedent('''
        import sys
        if __name__ == "__mp_main__":
            raise RuntimeError("this script's top level cannot run in a worker")
        import cumulo
        from cumulo.exceptions import ProviderError
        if __name__ == "__main__":
            try:
                cumulo.connect(workers=1)
            except ProviderError as exc:
                print("PROVIDER-ERROR", exc)
                sys.exit(3)
    '''), timeout=120)
    assert out.returncode == 3, out.stderr[-3000:]
    assert "worker processes did not start (dask: Nanny failed to start.)" in out.stdout
    assert "stderr" in out.stdout and "workers=1" in out.stdout
