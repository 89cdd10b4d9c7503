"""The run page's graph (long names, wide fan-outs, zoom to fit), dark mode, the step
panel as a bottom sheet on a phone, the token prompt of a live tab whose server starts
asking for one, and the 404 page: in a real headless Chromium against a real server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from clients import submit
from conftest import LiveServer, Stack, WebProcess, WorkerProcess, new_page, start_web, wait_for

from devtools.redis_server import free_port

LONG_NAME = "a_step_whose_name_is_far_too_long_to_fit_in_the_box_of_the_graph"
STATUSES = ("pending", "running", "succeeded", "failed", "cancelled", "skipped")

#: A real Chromium: left out of `make test-fast`.
pytestmark = pytest.mark.slow


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    yield from new_page(
        browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )


@pytest.fixture
def dark(browser: Any) -> Iterator[Any]:
    yield from new_page(browser, color_scheme="dark")


def box(page: Any, step: str) -> Any:
    return page.locator(f'.step[data-step="{step}"]')


def run_status(page: Any, status: str) -> None:
    page.locator(f'#run-status [data-status="{status}"]').wait_for()


def finished_run(page: Any, server: LiveServer, scenario: str, status: str = "succeeded") -> str:
    run_id: str = submit(server.url, scenario)["run_id"]
    page.goto(f"{server.url}/runs/{run_id}")
    run_status(page, status)
    return run_id


#: The elements that stick out of the page's width, unless a box that scrolls holds them.
OVERFLOWING = """() => {
    const width = document.documentElement.clientWidth;
    const out = [];
    for (const el of document.querySelectorAll("body *")) {
        const box = el.getBoundingClientRect();
        if (Math.max(box.right, box.left + el.scrollWidth) <= width + 0.5) continue;
        let up = el.parentElement;
        while (up && getComputedStyle(up).overflowX === "visible") up = up.parentElement;
        if (!up || up === document.body) out.push(el.outerHTML.slice(0, 80));
    }
    return out;
}"""


def no_page_scroll(page: Any) -> bool:
    """Nothing wider than the page (on a phone, innerWidth grows to what overflows)."""
    root = "document.documentElement"
    fits = page.evaluate(f"{root}.scrollWidth <= {root}.clientWidth")
    assert fits, page.evaluate(OVERFLOWING)
    return bool(fits)


def scale(page: Any) -> float:
    return float(page.locator("#graph").get_attribute("data-scale"))


# -- the graph -------------------------------------------------------------------------


def test_a_long_step_name_is_cut_with_an_ellipsis_and_whole_in_its_tooltip(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    finished_run(page, live_server, "test_long_chain")
    name = box(page, LONG_NAME).locator(".name")
    assert box(page, LONG_NAME).get_attribute("title") == LONG_NAME
    assert name.inner_text() == LONG_NAME  # all there, but cut where it is drawn
    cut = name.evaluate(
        "el => [el.scrollWidth > el.clientWidth, getComputedStyle(el).textOverflow]"
    )
    assert cut == [True, "ellipsis"]
    box(page, LONG_NAME).hover()
    box(page, LONG_NAME).click()
    page.locator("#detail h2").filter(has_text=LONG_NAME).wait_for()


def test_a_wide_fan_out_is_drawn_collapsed_with_its_statuses_and_expands_on_click(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    finished_run(page, live_server, "test_fan_out")
    fanned = page.locator('.step[data-step^="f"]')
    more = page.locator(".step.more")
    assert fanned.count() == 5
    assert more.count() == 1
    assert more.locator(".name").inner_text() == "+ 25 more"
    assert more.locator(".meta").inner_text() == "25 succeeded"
    assert more.get_attribute("data-status") == "succeeded"
    assert more.get_attribute("aria-expanded") == "false"
    # root to each box shown and the stand-in, each of those to join: no tangle.
    assert page.locator(".arrows path:not(marker path)").count() == 12
    assert no_page_scroll(page)

    more.click()
    wait_for(lambda: fanned.count() == 30, what="the column expanded")
    assert more.count() == 0
    assert page.locator(".arrows path:not(marker path)").count() == 60
    box(page, "f30").click()  # boxes shown late are as live as the others
    page.locator("#detail h2").filter(has_text="f30").wait_for()

    page.get_by_role("button", name="Show fewer").click()
    wait_for(lambda: fanned.count() == 5, what="the column collapsed again")
    assert more.count() == 1 and more.locator(".meta").inner_text() == "25 succeeded"


def test_the_graph_is_scaled_to_fit_the_page_and_100_percent_draws_it_whole(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    finished_run(page, live_server, "test_long_chain")
    graph = page.locator("#graph")
    main_width = page.evaluate("document.querySelector('.run-body').clientWidth")
    assert 0.4 < scale(page) < 1
    assert graph.locator(".graph-viewport").bounding_box()["width"] <= main_width
    assert no_page_scroll(page)
    assert (
        page.get_by_role("button", name="Fit", exact=True).get_attribute("aria-pressed") == "true"
    )

    # The last box, drawn scaled down, is still a button that opens its step.
    box(page, "s9").click()
    page.locator("#detail h2").filter(has_text="s9").wait_for()
    # The panel opens beside the graph, which shrinks again to leave it room.
    wait_for(
        lambda: (
            page.locator("#detail").bounding_box()["x"]
            >= graph.locator(".graph-viewport").bounding_box()["x"]
            + graph.locator(".graph-viewport").bounding_box()["width"]
        ),
        what="the panel beside the graph",
    )
    assert page.locator("#detail").evaluate("el => getComputedStyle(el).position") != "fixed"
    detail = page.locator("#detail").bounding_box()
    row = page.locator(".run-body").bounding_box()
    assert detail["x"] + detail["width"] <= row["x"] + row["width"] + 0.5  # none of it cut off
    assert page.locator(".run-body").evaluate("el => el.scrollWidth <= el.clientWidth")
    assert no_page_scroll(page)

    page.get_by_role("button", name="100%", exact=True).click()
    wait_for(lambda: scale(page) == 1, what="the graph at 100%")
    assert graph.locator(".graph-viewport").bounding_box()["width"] > main_width
    assert no_page_scroll(page)  # wider than the page: it scrolls in its own box
    page.get_by_role("button", name="Fit", exact=True).click()
    wait_for(lambda: scale(page) < 1, what="the graph fitted again")


# -- dark mode -------------------------------------------------------------------------

Colour = tuple[float, float, float]


def rgb(css: str) -> Colour:
    r, g, b = (float(x) for x in re.findall(r"[\d.]+", css)[:3])
    return r, g, b


def contrast(a: Colour, b: Colour) -> float:
    def luminance(c: Colour) -> float:
        def channel(v: float) -> float:
            v /= 255
            return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

        r, g, b = (channel(v) for v in c)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


#: Each status drawn on a box: its border, its background, its text and its name.
STATUS_COLOURS = """statuses => {
    const el = document.querySelector('.step[data-step]');
    const seen = {};
    for (const s of statuses) {
        el.dataset.status = s;
        const style = getComputedStyle(el);
        const name = getComputedStyle(el.querySelector('.name'));
        const note = getComputedStyle(el.querySelector('.note'));
        seen[s] = [
            style.borderTopColor, style.backgroundColor, style.color, name.color, note.color,
        ];
    }
    const root = getComputedStyle(document.documentElement);
    seen.page = [root.backgroundColor, root.color];
    return seen;
}"""


def test_dark_mode_follows_the_system_and_keeps_statuses_apart_and_readable(
    live_server: LiveServer, worker: WorkerProcess, page: Any, dark: Any
) -> None:
    run_id = finished_run(page, live_server, "test_long_chain")
    dark.goto(f"{live_server.url}/runs/{run_id}")
    run_status(dark, "succeeded")
    light_colours = page.evaluate(STATUS_COLOURS, STATUSES)
    dark_colours = dark.evaluate(STATUS_COLOURS, STATUSES)

    bg, fg = (rgb(c) for c in dark_colours["page"])
    assert sum(bg) < sum(rgb(light_colours["page"][0])) and sum(bg) < 3 * 60  # dark
    assert contrast(fg, bg) >= 7
    borders = {s: dark_colours[s][0] for s in ("running", "succeeded", "failed", "cancelled")}
    assert len(set(borders.values())) == 4, borders  # four statuses, four colours
    for status in STATUSES:
        border, background, text, name, note = (rgb(c) for c in dark_colours[status])
        assert dark_colours[status][1] != light_colours[status][1], status
        assert contrast(text, background) >= 4.5, (status, dark_colours[status])
        assert contrast(name, background) >= 7, (status, dark_colours[status])
        assert contrast(note, background) >= 4.5, (status, dark_colours[status])
        if status in borders:
            assert contrast(border, bg) >= 3, (status, dark_colours[status])
    # The badge and the cancel button read too.
    badge = dark.locator('#run-status [data-status="succeeded"]')
    colours = badge.evaluate(
        "el => [getComputedStyle(el).color, getComputedStyle(el).backgroundColor]"
    )
    assert contrast(rgb(colours[0]), rgb(colours[1])) >= 4.5


# -- a phone ---------------------------------------------------------------------------


def test_on_a_phone_the_step_panel_is_a_bottom_sheet_that_scrolls_and_closes(
    live_server: LiveServer, worker: WorkerProcess, phone: Any
) -> None:
    finished_run(phone, live_server, "test_long_chain")
    assert no_page_scroll(phone)
    box(phone, "s1").click()
    detail = phone.locator("#detail")
    detail.locator("h2").filter(has_text="s1").wait_for()
    assert detail.evaluate("el => getComputedStyle(el).position") == "fixed"
    rect = detail.bounding_box()
    assert rect["x"] >= 0 and rect["y"] >= 0
    assert rect["x"] + rect["width"] <= 390 and rect["y"] + rect["height"] <= 844.5
    assert rect["height"] <= 0.8 * 844
    assert no_page_scroll(phone)

    # However far the sheet is scrolled, its close button is in sight and answers.
    close = detail.get_by_role("button", name="close")
    detail.evaluate("el => { el.scrollTop = el.scrollHeight; }")
    button = close.bounding_box()
    assert button["y"] >= rect["y"] - 0.5 and button["y"] + button["height"] <= 844
    close.click()
    detail.wait_for(state="hidden")


def test_on_a_phone_the_lists_and_the_header_fit_the_screen(
    live_server: LiveServer, worker: WorkerProcess, phone: Any
) -> None:
    submit(live_server.url, "hello_sequence", {"name": "a rather long name for a phone"})
    shown = {
        "runs": "#runs-table tr[data-run]",
        "scenarios": "form[data-scenario]",
        "workers": "#workers-table tr[data-worker]",
    }
    for tab, selector in shown.items():
        phone.goto(f"{live_server.url}/#{tab}")
        phone.locator(selector).first.wait_for()
        assert no_page_scroll(phone), tab
        header = phone.locator("header").bounding_box()
        assert header["width"] <= 390


# -- the token prompt of a live tab ----------------------------------------------------


@pytest.fixture
def restartable(isolated_stack: Stack, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A gunicorn web on a port of its own that the test may kill and start again (a
    deployment restarted), on a stack no worker takes runs from: runs stay queued."""
    port = free_port()
    state: dict[str, Any] = {"web": None}
    starts = iter(range(1, 100))

    def start(**env: str) -> WebProcess:
        name = f"web-{next(starts)}"
        web = start_web({**isolated_stack.env, **env}, tmp_path, name, port=port)
        state["web"] = web
        return web

    state["start"] = start
    state["stack"] = isolated_stack
    yield state
    if state["web"] is not None:
        state["web"].kill()


def test_a_live_tab_asks_for_the_token_when_the_restarted_server_needs_one(
    restartable: dict[str, Any], page: Any
) -> None:
    web = restartable["start"]()
    run_id = submit(web.url, "test_cancellable")["run_id"]  # queued, and stays so
    page.goto(f"{web.url}/runs/{run_id}")
    page.locator('#connection[data-state="live"]').wait_for()

    web.kill()
    page.locator('#connection[data-state="reconnecting"]').wait_for()
    restartable["start"](STEPSTREAM_API_TOKEN="s3cret")
    # Without the check over HTTP this tab would say "reconnecting…" forever.
    page.locator("#token-dialog").wait_for(state="visible", timeout=10_000)
    page.locator("#token-input").fill("s3cret")
    page.locator("#token-input").press("Enter")
    page.locator('#connection[data-state="live"]').wait_for()
    assert not page.locator("#token-dialog").is_visible()
    assert page.evaluate("sessionStorage.getItem('stepstream.token')") == "s3cret"


def test_a_live_tab_whose_run_is_gone_after_a_restart_stops_reconnecting_and_says_so(
    restartable: dict[str, Any], page: Any
) -> None:
    web = restartable["start"]()
    run_id = submit(web.url, "test_cancellable")["run_id"]
    page.goto(f"{web.url}/runs/{run_id}")
    page.locator('#connection[data-state="live"]').wait_for()

    web.kill()
    with restartable["stack"].store() as store:
        store.flushdb()  # the run expired, or the store was emptied
    restartable["start"]()
    gone = page.locator('#connection[data-state="gone"]')
    gone.wait_for(timeout=10_000)
    assert "no longer exists" in gone.inner_text()
    # Another attempt would come within the backoff's longest pause (5 s): none does.
    with pytest.raises(Exception, match="Timeout"):
        page.wait_for_event("websocket", timeout=6_000)


# -- not found -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/runs/", "/runs/x/y", "/static/nope.js/x"])
def test_an_unknown_ui_path_is_an_html_404_with_links_back(
    live_server: LiveServer, path: str
) -> None:
    response = httpx.get(f"{live_server.url}{path}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>Page not found</h1>" in response.text
    assert 'href="/#runs"' in response.text and 'href="/#scenarios"' in response.text


@pytest.mark.parametrize("path", ["/api", "/api/nope", "/api/runs/x/y"])
def test_an_unknown_api_path_keeps_its_json_404(live_server: LiveServer, path: str) -> None:
    response = httpx.get(f"{live_server.url}{path}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_404_page_and_an_unknown_tab_in_the_browser(live_server: LiveServer, page: Any) -> None:
    response = page.goto(f"{live_server.url}/no/such/page")
    assert response.status == 404
    assert page.title() == "Page not found · stepstream"
    page.get_by_role("heading", name="Page not found").wait_for()
    page.locator("main").get_by_role("link", name="Scenarios").click()
    page.get_by_role("heading", name="Scenarios").first.wait_for()

    page.goto(f"{live_server.url}/#nope")
    page.get_by_role("heading", name="Page not found").wait_for()
    assert page.title() == "Page not found · stepstream"
    assert page.locator("nav a.active").count() == 0
    assert page.locator("#runs-table").count() == 0
    page.locator("main").get_by_role("link", name="Runs").click()
    page.locator("#runs-table").wait_for()
