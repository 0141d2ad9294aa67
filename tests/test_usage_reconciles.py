"""Where the spend went adds up to the spend: cells + other cells + outside cells + idle = spend.

One real IPython kernel (nbclient) runs a real local cluster: two cells of work, work from a
thread (outside any cell), a cell that only sleeps (idle workers). Every view of it is checked
to add up: ``cluster.usage.cells()`` live and after close, the inline meter's rows, the bokeh
report, the sidebar card's rows (the Jupyter server's manager, in this test process), and the
usage kept in the registry row at close. The same cells are named the same way everywhere
(their notebook and execution count, their first line on hover). Both price models are
checked: worker-time x a configured rate, and a provider's clock (the row's rate_per_hour).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import dask
import pytest

from cumulo.jupyter.manager import ClusterManager
from cumulo.cost.metering import spend_of, stored_usage
from cumulo.life.registry import Registry

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.slow

NAME = "reconcile"
NOTEBOOK = "reconcile.ipynb"
REL = 1e-6  # the rows add up to the spend up to floating-point rounding

SETUP = (
    "import os, json, time, threading\n"
    f"os.environ['JPY_SESSION_NAME'] = '/home/someone/work/{NOTEBOOK}'  # what jupyter_server gives a kernel\n"
    "import dask\n"
    "dask.config.set({'cumulo.cost.rate-per-worker-hour': 36.0, 'cumulo.widgets.cell-line-on-connect': False,\n"
    "                 'cumulo.cost.sample-interval': '0.2s'})\n"
    "%load_ext cumulo\n"
    "import cumulo\n"
    "from cumulo.cost.metering import Spend\n"
    "from cumulo.widgets.meter import CostMeter, rank_cells, render_html, top_cells\n"
    f"cluster = cumulo.connect(workers=2, threads_per_worker=1, name={NAME!r})\n"
    "client = cluster.client\n"
    "def nap(i):\n"
    "    time.sleep(0.3)\n"
    "    return i\n"
)

# what each view says, printed as JSON by the kernel
REPORT = (
    "df = cluster.usage.cells()\n"
    "ledger = cluster.usage.ledger()\n"
    "s = cluster.usage.summary(ledger)\n"
    "meter = rank_cells(top_cells(ledger, cluster.usage.record(), spend=Spend(s['spend'], None, s['cost_basis'])))\n"
    "page = render_html(cluster.name, s, cells=meter) + CostMeter(cluster).html()\n"
    "print(json.dumps({'rows': json.loads(df.to_json(orient='records')), 'spend': df.attrs['spend'].amount,\n"
    "                  'meter': meter, 'meter_spend': s['spend'], 'page': page}))"
)

CELLS = [
    SETUP,
    # 1: cell A
    "# cell A: eight naps\nclient.gather(client.map(nap, range(8), pure=False))",
    # 2: cell B
    "futures = client.map(nap, range(4), pure=False)  # cell B\nclient.gather(futures)",
    # 3: work from a thread: outside any cell
    "t = threading.Thread(target=lambda: client.gather(client.map(nap, range(100, 102), pure=False)))\n"
    "t.start(); t.join()",
    # 4: nothing runs: both workers idle
    "time.sleep(1.5)",
    # 5: the views, live, at the configured rate
    REPORT,
    # 6: the provider's clock: a price on the row (as a cloud provider records it)
    "cluster.registry.update(cluster.id, rate_per_hour=7.2)\n" + REPORT,
    # 7: close, then the views again
    "cluster.close()\n"
    "df = cluster.usage.cells()\n"
    "plot = cluster.usage.plot()\n"
    "print(json.dumps({'rows': json.loads(df.to_json(orient='records')), 'spend': cluster.usage.spend().amount,\n"
    "                  'attrs_spend': df.attrs['spend'].amount, 'bars': plot.layout.children[2].title.text}))",
]


def _report(cell: Any) -> dict[str, Any]:
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert not errors, errors
    return json.loads("".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout"))


def _costs(rows: list[dict[str, Any]]) -> float:
    return sum(r["cost"] for r in rows if r["cost"] is not None)


def test_cells_outside_and_idle_add_up_to_the_spend_in_every_view(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    card: dict[str, Any] = {}
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
            if i == 5:  # the sidebar's card, from the Jupyter server's side (this process), while it runs
                with dask.config.set({"cumulo.cost.rate-per-worker-hour": 36.0}):
                    [card] = [r for r in ClusterManager(Registry()).list()["clusters"] if r["name"] == NAME]
    count = {i: c.execution_count for i, c in enumerate(nb.cells)}
    a_label, b_label = f"{NOTEBOOK} [{count[1]}]", f"{NOTEBOOK} [{count[2]}]"

    # live, at $36 per worker-hour: cells() adds up to the spend it was computed with
    live = _report(nb.cells[5])
    rows = {r["cell"]: r for r in live["rows"]}
    assert list(rows) == [a_label, b_label, "outside cells", "idle"], list(rows)
    assert rows[a_label]["first_line"] == "# cell A: eight naps"
    assert rows[b_label]["first_line"] == "futures = client.map(nap, range(4), pure=False)  # cell B"
    assert rows["outside cells"]["task_seconds"] >= 2 * 0.3 and rows["outside cells"]["cost"] > 0
    idle = rows["idle"]
    assert idle["worker_seconds"] >= 2 * 1.0 and idle["cost"] > 0  # two workers slept through cell 4 at least
    assert "paid time no task used" in idle["cost_basis"]
    assert live["spend"] > 0 and _costs(live["rows"]) == pytest.approx(live["spend"], rel=REL)
    # worker-seconds add up too: busy (the cells and outside) plus idle is every paid worker-second
    assert rows[a_label]["worker_seconds"] == pytest.approx(rows[a_label]["cost"] / 36.0 * 3600, rel=REL)

    # the inline meter: the same names, the rows add up to the spend it shows, and it says so
    meter = {r["label"]: r for r in live["meter"]}
    assert list(meter) == [a_label, b_label, "outside cells", "idle"], list(meter)
    assert meter[a_label]["first_line"] == "# cell A: eight naps"
    assert _costs(live["meter"]) == pytest.approx(live["meter_spend"], rel=REL)
    assert f"title='# cell A: eight naps'>{a_label}</td>" in live["page"]
    assert live["page"].count("total (the spend)") == 2  # the meter's own html() draws the total row too

    # the sidebar's card (the server's own ledger reading): same names, adds up to the card's spend
    cells = {c["label"]: c for c in card["top_cells"]}
    assert list(cells) == [a_label, b_label, "outside cells", "idle"], list(cells)
    assert cells[b_label]["first_line"].endswith("# cell B")
    assert card["spent"] > 0 and _costs(card["top_cells"]) == pytest.approx(card["spent"], rel=REL)

    # a provider's clock: the idle row takes start-up and billing rounding too, and it still adds up
    priced = _report(nb.cells[6])
    rows = {r["cell"]: r for r in priced["rows"]}
    assert "provider price" in rows[a_label]["cost_basis"]
    assert _costs(priced["rows"]) == pytest.approx(priced["spend"], rel=REL)
    assert _costs(priced["meter"]) == pytest.approx(priced["meter_spend"], rel=REL)

    # after close: the rows, as read while it closed, add up to the final spend; so do the report's bars
    after = _report(nb.cells[7])
    assert [r["cell"] for r in after["rows"]] == [a_label, b_label, "outside cells", "idle"]
    assert after["attrs_spend"] == pytest.approx(after["spend"], rel=REL)
    assert _costs(after["rows"]) == pytest.approx(after["spend"], rel=REL)
    total = float(re.search(r"\$([\d,.]+) in all", after["bars"]).group(1).replace(",", ""))
    assert total == pytest.approx(after["spend"], abs=5e-5)  # the title rounds to 1/100 of a cent

    # the usage kept in the registry row: the same rows, reconciled with the row's final spend
    record = Registry().latest(NAME)
    assert record.state == "closed" and record.usage
    kept = stored_usage(record)
    assert kept is not None
    assert [r["label"] for r in kept["cells"]] == [a_label, b_label, "outside cells", "idle"]
    final = spend_of(record, None).amount
    assert final == pytest.approx(after["spend"], rel=REL)
    assert _costs(kept["cells"]) == pytest.approx(final, rel=REL)
    assert kept["summary"]["spend"] == pytest.approx(final, rel=REL)
    assert kept["summary"]["tasks"] == 8 + 4 + 2
