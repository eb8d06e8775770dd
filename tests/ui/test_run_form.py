"""The operator's run form of `recorder-pipeline/recorder` in the stack's Prefect UI (headless Chromium).

The recorder is picked from a dropdown of the known recorders (the deployment's schema names
them: `flows.run_form.offer_recorders_in_run_form`), the window is typed as ISO times in the
properties' JSON inputs (the UI's date picker stops at minutes), the run is followed in the UI
until Completed, and its rows are read back from ClickHouse.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' (playwright)")
from playwright.sync_api import Locator, Page, expect  # noqa: E402

from tests.browser import chromium_tab  # noqa: E402

DEPLOYMENT = "recorder-pipeline/recorder"
RECORDER, CHANNEL = "nvr-03", 2
RUN_TIMEOUT_MS = 600_000
TERMINAL = re.compile(r"^(Completed|Failed|Crashed|Cancelled)$")


def _schema(stack) -> dict:
    flow, name = DEPLOYMENT.split("/")
    response = httpx.get(f"{stack.api_url}/deployments/name/{flow}/{name}", timeout=30)
    response.raise_for_status()
    return response.json()["parameter_openapi_schema"]


@pytest.fixture(scope="module")
def run_form(stack) -> list[str]:
    """The stack with the recorders offered in the run form (supervisor.start does it after deploy)."""
    from flows.recorders import recorder_names
    from flows.run_form import offer_recorders_in_run_form

    offer_recorders_in_run_form()
    assert offer_recorders_in_run_form() == []  # idempotent
    known = recorder_names()
    assert {"nvr-01", "nvr-02", "nvr-03"} <= set(known)
    return known


@pytest.fixture
def page(tmp_path) -> Iterator[Page]:
    # Tall enough that the whole form is in one screenshot (the app scrolls inside its own pane).
    with chromium_tab(tmp_path / "last.png", height=2200) as tab:
        yield tab


def _property(page: Page, name: str) -> Locator:
    """One parameter of the run form, found by the label the operator reads (`start (Optional)`)."""
    label = page.locator(".schema-form-property__label", has_text=re.compile(rf"^{name}( \(Optional\))?$"))
    return page.locator(".schema-form-property").filter(has=label)


def _as_json(page: Page, prop: Locator, value: str) -> None:
    """The property's own menu -> "Use JSON input", then the value typed as JSON."""
    prop.locator(".schema-form-property-menu").get_by_role("button").click()
    page.get_by_role("button", name="Use JSON input").click()
    prop.get_by_role("textbox").fill(value)


@pytest.mark.stack
def test_every_run_form_parameter_has_a_title_and_a_description(run_form, stack):
    schema = _schema(stack)
    assert schema["required"] == ["recorder"]
    for name, prop in schema["properties"].items():
        assert prop.get("title"), name
        assert len(prop.get("description", "")) > 10, name
    # The window's defaults are explained where the operator fills it in.
    assert "hour before the run's scheduled start" in schema["properties"]["start"]["description"]
    assert "after start" in schema["properties"]["end"]["description"]
    # What the server refuses before a run exists, said where the operator reads it.
    for end in ("start", "end"):
        assert "an ISO 8601 time with a time zone" in schema["properties"][end]["description"]
        assert schema["properties"][end]["pattern"].startswith("(?#an ISO 8601 time with a time zone")
    assert schema["dependentRequired"] == {"start": ["end"], "end": ["start"]}
    recorder = schema["properties"]["recorder"]
    assert recorder["enum"] == run_form == sorted(run_form)
    assert recorder["title"] == "recorder" and "HikvisionRecorder block" in recorder["description"]


@pytest.mark.stack
def test_a_recorder_outside_the_inventory_is_refused_before_any_run(run_form, stack):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    from stack.simulator.spec import demo_window

    start, end = demo_window()
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        before = len(client.read_flow_runs())
        assert deployment.enforce_parameter_schema
        with pytest.raises(PrefectHTTPStatusError) as refused:
            client.create_flow_run_from_deployment(deployment.id, parameters={"recorder": "nvr-99"})
        assert refused.value.response.status_code == 409
    # What the operator sees on the command line: the refusal names every known recorder.
    prefect = str(Path(sys.executable).parent / "prefect")
    done = subprocess.run(
        [prefect, "deployment", "run", DEPLOYMENT, "--param", "recorder=nvr-99",
         "--param", f"start={start.isoformat()}", "--param", f"end={end.isoformat()}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    said = " ".join((done.stdout + done.stderr).split())
    print(said)
    assert done.returncode != 0
    assert "Validation failed for field 'recorder'" in said
    assert f"'nvr-99' is not one of {run_form!r}" in said
    with get_client(sync_client=True) as client:
        assert len(client.read_flow_runs()) == before  # no run was made


@pytest.mark.stack
@pytest.mark.ui
def test_operator_runs_a_recorder_window_from_the_ui(run_form, stack, page, tmp_path):
    from prefect.client.orchestration import get_client

    from blocks.clickhouse import ClickHouseSink
    from stack.simulator.spec import demo_window

    start, end = demo_window()
    # The deployment's own page (with a deployment per recorder, the deployments list runs to
    # several pages, and which page holds it depends on what else the session registered).
    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name("recorder-pipeline/recorder").id
    page.goto(f"{stack.ui_url}/deployments/deployment/{deployment_id}")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("button", name="Custom run").click()
    expect(page.get_by_role("heading", name="Parameters")).to_be_visible()

    # The recorder: a dropdown offering exactly the known recorders.
    recorder = _property(page, "recorder")
    expect(recorder).to_contain_text("Name of the recorder")
    recorder.locator(".p-select-button__icon").click()  # the chevron opens the list
    options = page.get_by_role("listbox").get_by_role("option")
    expect(options).to_have_text(run_form)
    options.filter(has_text=re.compile(rf"^{RECORDER}$")).click()
    expect(recorder.get_by_role("listbox")).to_have_count(0)
    expect(recorder).to_contain_text(RECORDER)

    # The window, to the second, as the descriptions show it (e.g. 2026-11-01T10:00:00Z).
    window = {"start": start, "end": end}
    for name, when in window.items():
        prop = _property(page, name)
        expect(prop).to_contain_text("with a time zone")
        _as_json(page, prop, f'"{when.isoformat().replace("+00:00", "Z")}"')
    channels = _property(page, "channels")
    channels.get_by_role("button", name="list", exact=True).click()
    channels.get_by_role("button", name="Add item").click()
    channels.get_by_role("spinbutton").fill(str(CHANNEL))

    # A name of the operator's own (the form's generated one may change while the form loads).
    run_name = f"ui-{RECORDER}-{datetime.now(UTC):%H%M%S}"
    name_box = page.locator(".p-label", has=page.get_by_text("Run Name", exact=True)).get_by_role("textbox")
    name_box.fill(run_name)
    expect(name_box).to_have_value(run_name)
    page.screenshot(path=tmp_path / "run-form.png")

    # Submitted, the UI goes back to the deployment and says so in a toast that links the run.
    page.get_by_role("button", name="Submit").click()
    # (Prefect 3.8's UI mounts its toast container twice: the last copy is the one on top.)
    toast = page.get_by_role("paragraph").filter(has_text=f"{run_name} scheduled to start now").last
    # The UI shows the toast, then navigates to the deployment's Runs tab: a click on "View run"
    # before that navigation ends is overridden by it, so the click waits for the Runs tab.
    expect(page).to_have_url(re.compile(rf"/deployments/deployment/{deployment_id}\?tab=Runs$"))
    expect(page.get_by_role("tabpanel", name="Runs")).to_be_visible()
    toast.get_by_role("button", name="View run").click()
    expect(page).to_have_url(re.compile(r"/runs/flow-run/[0-9a-f-]{36}"))
    expect(page.get_by_role("banner")).to_contain_text(run_name)
    run_id = re.search(r"/runs/flow-run/([0-9a-f-]{36})", page.url)[1]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert _same_window(run.parameters, start, end), run.parameters

    # The run page follows the run (the UI polls the API) until it ends.
    state = page.get_by_role("banner").locator(".state-badge")  # the run page's heading
    expect(state).to_have_text(TERMINAL, timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=tmp_path / "run-completed.png")
    assert state.inner_text().strip() == "Completed", _run_message(run_id)

    with get_client(sync_client=True) as client:
        summary = client.read_flow_run(run_id).state.result(_sync=True)  # (the event loop again)
    assert (summary["recorder"], summary["segments"], summary["persisted"], summary["failed"]) == (
        RECORDER, 4, 4, []), summary  # fmt: skip
    # _sync: Playwright runs an event loop in this thread, where Prefect would hand back a coroutine.
    with ClickHouseSink.load("nvrflow", _sync=True).connect() as ch:
        rows = ch.query(
            "SELECT count() FROM {db}.segments FINAL WHERE recorder = {r:String} AND channel = {c:UInt16} "
            "AND start >= {s:DateTime64(3, 'UTC')} AND start < {e:DateTime64(3, 'UTC')}",
            {"r": RECORDER, "c": CHANNEL, "s": start.replace(tzinfo=None), "e": end.replace(tzinfo=None)},
        )[0][0]  # fmt: skip
    # The demo window holds 4 segments per channel. (A row keeps the id of the run that first
    # inserted it: a repeated insert with the same deduplication token adds nothing.)
    assert rows == 4, rows


def _same_window(parameters: dict, start: datetime, end: datetime) -> bool:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text).astimezone(UTC)

    return (
        parameters.get("recorder") == RECORDER
        and parameters.get("channels") == [CHANNEL]
        and parse(parameters["start"]) == start
        and parse(parameters["end"]) == end
    )


def _run_message(run_id: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return f"{state.name if state else None}: {state.message if state else ''}"


@pytest.mark.stack
def test_a_missing_deployment_is_skipped_with_a_log_line(run_form, caplog):
    import logging

    from flows.run_form import offer_recorders_in_run_form

    logger = logging.getLogger("prefect.nvrflow.recorders")  # Prefect's loggers do not propagate to root
    logger.addHandler(caplog.handler)
    try:
        assert offer_recorders_in_run_form(deployment="no-such-flow/nowhere") == []
    finally:
        logger.removeHandler(caplog.handler)
    assert "no-such-flow/nowhere: no such deployment" in caplog.text


@pytest.mark.stack
def test_sync_inventory_offers_a_new_recorder_in_the_run_form(run_form, stack, tmp_path):
    from openpyxl import Workbook

    from deployments.sample_inventory import HEADER
    from flows.inventory import sync_inventory

    book = Workbook()
    book.active.append(HEADER)
    book.active.append(["ui-new-nvr", "10.9.9.9", 80, "admin", "pw-ui-new", "1", 1, "ui", "no"])
    book.save(tmp_path / "new.xlsx")
    changes = sync_inventory(str(tmp_path / "new.xlsx"))
    known = sorted([*run_form, "ui-new-nvr"])
    assert f"{DEPLOYMENT}: run form offers recorders {', '.join(known)}" in changes
    recorder = _schema(stack)["properties"]["recorder"]
    assert recorder["enum"] == known and "HikvisionRecorder block" in recorder["description"]
    assert sync_inventory(str(tmp_path / "new.xlsx")) == []  # nothing changed, schema included
