"""The runs list in a real headless Chromium: pages past fifty that hold their place as
runs arrive, filters and the search kept in the URL, each run's message, and empty
lists that say what was asked for.

Runs are written with the store into a database no worker sweeps: they stay queued, or
become what the test makes them, and each test has as many as it needs at once."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from conftest import LiveServer, serve

from tasks import keys
from web.services import services

#: A real Chromium: left out of `make test-fast`.
pytestmark = pytest.mark.slow

expect = pytest.importorskip("playwright.sync_api").expect
EN_DASH = "\N{EN DASH}"


@pytest.fixture
def server(app_factory: Callable[..., Any], quiet_db: str) -> Iterator[LiveServer]:
    with serve(app_factory(redis_url=quiet_db)) as server:
        yield server


def create(server: LiveServer, count: int, scenario_id: str = "hello_sequence") -> list[str]:
    """`count` queued runs, oldest first, in one round trip."""
    run_ids = [str(uuid.uuid4()) for _ in range(count)]
    with server.app.app_context():
        svc = services()
        scenario = svc.catalog.get(scenario_id)
        svc.store.create_runs([(run_id, scenario, {"name": "x"}) for run_id in run_ids])
    return run_ids


def cancel(server: LiveServer, run_id: str) -> None:
    with server.app.app_context():
        services().store.cancel_run(run_id)


def listed(page: Any) -> list[str]:
    return [str(r) for r in page.locator("#runs-table tbody tr[data-run]").evaluate_all(
        "rows => rows.map(row => row.dataset.run)")]  # fmt: skip


def expect_rows(page: Any, run_ids: list[str]) -> None:
    """The table lists exactly these runs, in this order (once the page has caught up)."""
    rows = page.locator("#runs-table tbody tr[data-run]")
    expect(rows).to_have_count(len(run_ids))
    expect(rows.first).to_have_attribute("data-run", run_ids[0])
    expect(rows.last).to_have_attribute("data-run", run_ids[-1])
    assert listed(page) == run_ids


def test_pages_past_fifty_hold_their_place_as_runs_arrive(server: LiveServer, page: Any) -> None:
    newest_first = create(server, 120)[::-1]
    page.goto(f"{server.url}/#runs")
    expect_rows(page, newest_first[:50])
    expect(page.locator("#runs-newer")).to_be_hidden()
    expect(page.locator("#runs-range")).to_have_text(f"runs 1{EN_DASH}50")

    page.locator("#runs-older").click()
    expect_rows(page, newest_first[50:100])
    assert f"before={newest_first[49]}" in page.url
    expect(page.locator("#runs-range")).to_have_text(f"runs 51{EN_DASH}100")

    # New runs at the top move nothing here: they are counted in a notice.
    arrived = create(server, 3)[::-1]
    expect(page.locator("#runs-new")).to_contain_text("3 newer runs")
    assert listed(page) == newest_first[50:100]

    page.locator("#runs-older").click()
    expect_rows(page, newest_first[100:])
    expect(page.locator("#runs-older")).to_be_hidden()
    expect(page.locator("#runs-new")).to_contain_text("3 newer runs")

    page.locator("#runs-newer").click()
    expect_rows(page, newest_first[50:100])
    page.go_back()
    expect_rows(page, newest_first[100:])
    page.go_forward()
    expect_rows(page, newest_first[50:100])
    page.reload()  # the page is in the URL; the way back to page 1 is kept for the tab
    expect_rows(page, newest_first[50:100])

    page.locator("#runs-newer").click()
    expect_rows(page, (arrived + newest_first)[:50])
    expect(page.locator("#runs-newer")).to_be_hidden()
    # Page 1 shows new runs as they come.
    later = create(server, 1)
    expect(page.locator("#runs-table tbody tr").first).to_have_attribute("data-run", later[0])


def test_a_shared_link_to_an_older_page_opens_it(server: LiveServer, page: Any) -> None:
    newest_first = create(server, 60)[::-1]
    page.goto(f"{server.url}/#runs?before={newest_first[49]}")
    expect_rows(page, newest_first[50:])
    # Where it was reached from is not known in a new tab: "Newer" is the first page.
    expect(page.locator("#runs-newer")).to_have_text("← Newest")
    page.locator("#runs-newer").click()
    expect_rows(page, newest_first[:50])


def test_filters_live_in_the_url_through_reloads_and_history(server: LiveServer, page: Any) -> None:
    hello = create(server, 4)
    fan = create(server, 2, "fan_out_join")
    for run_id in (hello[0], hello[2], fan[1]):
        cancel(server, run_id)
    page.goto(f"{server.url}/")
    expect_rows(page, (hello + fan)[::-1])

    page.locator("#filter-status").select_option("cancelled")
    expect_rows(page, [fan[1], hello[2], hello[0]])
    page.locator("#filter-scenario").select_option("hello_sequence")
    expect_rows(page, [hello[2], hello[0]])
    assert re.search(r"#runs\?status=cancelled&scenario_id=hello_sequence$", page.url), page.url

    page.reload()
    expect_rows(page, [hello[2], hello[0]])
    expect(page.locator("#filter-status")).to_have_value("cancelled")
    expect(page.locator("#filter-scenario")).to_have_value("hello_sequence")

    page.go_back()
    expect_rows(page, [fan[1], hello[2], hello[0]])
    expect(page.locator("#filter-scenario")).to_have_value("")
    page.go_forward()
    expect_rows(page, [hello[2], hello[0]])

    # A link made by hand works the same, and an empty list says what was asked for.
    page.goto(f"{server.url}/#runs?status=failed&scenario_id=hello_sequence")
    empty = page.locator("#runs-table td.empty")
    expect(empty).to_contain_text("No failed runs of hello_sequence.")
    page.locator("#clear-filters").click()
    expect_rows(page, (hello + fan)[::-1])
    assert page.url.endswith("/#runs")


def test_an_empty_list_explains_itself(server: LiveServer, page: Any) -> None:
    page.goto(f"{server.url}/#runs")
    expect(page.locator("#runs-table td.empty")).to_contain_text("No runs yet.")
    expect(page.locator("#clear-filters")).to_have_count(0)
    page.goto(f"{server.url}/#runs?q=0000&status=queued")
    expect(page.locator("#runs-table td.empty")).to_contain_text(
        "No queued runs whose id starts with 0000."
    )
    expect(page.locator("#clear-filters")).to_be_visible()
    # A link the API refuses says why, with the same way out.
    page.goto(f"{server.url}/#runs?scenario_id=no_such_scenario")
    expect(page.locator("#runs-table td.empty")).to_contain_text("unknown scenario_id")
    expect(page.locator("#clear-filters")).to_be_visible()


def test_the_search_finds_a_run_by_the_start_of_its_id(server: LiveServer, page: Any) -> None:
    run_ids = create(server, 70)
    wanted = run_ids[3]  # on the second page
    page.goto(f"{server.url}/#runs")
    expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(50)
    assert wanted not in listed(page)

    search = page.locator("#run-search")
    search.fill(wanted[:8].upper())  # as shown in the list, in any case
    search.press("Enter")
    expect_rows(page, [wanted])
    assert page.url.endswith(f"#runs?q={wanted[:8]}")
    page.reload()
    expect_rows(page, [wanted])
    expect(page.locator("#run-search")).to_have_value(wanted[:8])

    search = page.locator("#run-search")
    search.fill("xyz")
    search.press("Enter")
    expect(page.locator("#run-search-error")).to_contain_text("at least its first 4 characters")

    search.fill("")
    search.press("Enter")
    expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(50)

    # A whole id opens the run.
    page.locator("#run-search").fill(f"  {wanted}  ")
    page.locator("#run-search").press("Enter")
    page.wait_for_url(re.compile(rf"/runs/{wanted}$"))


def test_each_run_shows_its_message_cut_short_with_all_of_it_in_a_tooltip(
    server: LiveServer, quiet_db: str, page: Any
) -> None:
    short, long = create(server, 2)
    cancel(server, short)
    message = "the step could not reach the mail server: " + "connection refused; " * 20
    with redis.Redis.from_url(quiet_db) as client:
        client.hset(keys.run(long), "message", message)  # as a failed step would leave it
    page.goto(f"{server.url}/#runs")
    short_cell = page.locator(f'tr[data-run="{short}"] td.message')
    expect(short_cell).to_have_text("cancelled by request")
    expect(page.locator(f'tr[data-run="{short}"] [data-status="cancelled"]')).to_be_visible()
    cell = page.locator(f'tr[data-run="{long}"] td.message')
    expect(cell).to_have_attribute("title", message)
    assert cell.evaluate("td => td.scrollWidth > td.clientWidth"), "the message is not cut short"
    assert cell.evaluate("td => td.getBoundingClientRect().height < 40"), "not on one line"
