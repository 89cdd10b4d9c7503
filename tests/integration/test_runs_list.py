"""`GET /api/runs?run_id=<start of an id>`: finding runs by the start of their id, alone
or with the other filters and the `before` cursor, and the id index behind it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from tasks import id_index, keys
from web.services import services


def made_id(start: str = "") -> str:
    """A new run id beginning with `start`."""
    fresh = str(uuid.uuid4())
    return start + fresh[len(start) :]


def create(app: Any, run_ids: list[str], scenario_id: str = "hello_sequence") -> list[str]:
    """Queued runs with these ids, created in this order, without the broker."""
    with app.app_context():
        svc = services()
        scenario = svc.catalog.get(scenario_id)
        assert scenario is not None
        svc.store.create_runs([(run_id, scenario, {"name": "x"}) for run_id in run_ids])
    return run_ids


def listed(client: Any, **query: Any) -> list[str]:
    response = client.get("/api/runs", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [run["run_id"] for run in response.get_json()["runs"]]


def error_of(client: Any, **query: Any) -> str:
    response = client.get("/api/runs", query_string=query)
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]["code"]
    return str(body["error"]["message"])


def test_a_prefix_finds_the_runs_that_start_with_it_newest_first(app: Any, client: Any) -> None:
    ours = create(app, [made_id("abcd1"), made_id("9999"), made_id("abcd2"), made_id("abce")])
    assert listed(client, run_id="abcd") == [ours[2], ours[0]]
    assert listed(client, run_id="ABCD") == [ours[2], ours[0]]  # case-insensitive
    assert listed(client, run_id=ours[0][:8]) == [ours[0]]  # what the list shows
    assert listed(client, run_id=ours[0][:11]) == [ours[0]]  # past the first dash
    assert listed(client, run_id=ours[0]) == [ours[0]]  # a whole id
    assert listed(client, run_id=ours[0].upper()) == [ours[0]]
    assert listed(client, run_id="abcf") == []
    assert listed(client, run_id=made_id()) == []  # a whole id of no run
    assert listed(client, run_id="") == listed(client)  # empty: no filter


def test_runs_created_after_a_search_are_found_by_the_next(app: Any, client: Any) -> None:
    first = create(app, [made_id("feed")])
    assert listed(client, run_id="feed") == first
    later = create(app, [made_id("feed"), made_id("feed")])
    assert listed(client, run_id="feed") == later[::-1] + first


def test_a_prefix_combines_with_status_and_scenario(app: Any, client: Any) -> None:
    hello = create(app, [made_id("beef"), made_id("beef")])
    fan = create(app, [made_id("beef")], "fan_out_join")
    with app.app_context():
        services().store.cancel_run(hello[0])
    assert listed(client, run_id="beef", status="queued") == [fan[0], hello[1]]
    assert listed(client, run_id="beef", status="cancelled") == [hello[0]]
    assert listed(client, run_id="beef", scenario_id="hello_sequence") == hello[::-1]
    assert listed(client, run_id="beef", scenario_id="fan_out_join", status="queued") == fan
    assert listed(client, run_id="beef", scenario_id="fan_out_join", status="failed") == []
    assert listed(client, run_id=hello[0], status="queued") == []


@pytest.mark.parametrize("limit", [1, 2, 3, 5])
def test_prefix_pages_cover_every_match_once(app: Any, client: Any, limit: int) -> None:
    ours = create(app, [made_id("c0de") if i % 3 else made_id("0ff1") for i in range(12)])
    matches = [run_id for run_id in ours if run_id.startswith("c0de")][::-1]
    pages: list[list[str]] = []
    before = None
    while True:
        query = {"run_id": "c0de", "limit": limit} | ({"before": before} if before else {})
        body = client.get("/api/runs", query_string=query).get_json()
        pages.append([run["run_id"] for run in body["runs"]])
        before = body["next_before"]
        if before is None:
            break
        assert before == pages[-1][-1]
        assert len(pages) <= len(matches)
    assert [run_id for page in pages for run_id in page] == matches
    assert all(len(page) == limit for page in pages[:-1]) and pages[-1]


def test_a_cursor_from_the_unfiltered_list_pages_a_search(app: Any, client: Any) -> None:
    ours = create(app, [made_id("d00d"), made_id("1234"), made_id("d00d"), made_id("1234")])
    # The cursor is any listed run, here one the search does not match.
    assert listed(client, run_id="d00d", before=ours[3]) == [ours[2], ours[0]]
    assert listed(client, run_id="d00d", before=ours[1]) == [ours[0]]
    assert listed(client, run_id="d00d", before=ours[0]) == []


@pytest.mark.parametrize(
    "bad",
    [
        "abc",  # too short
        "xyz1",  # not hex
        "abcd_",
        "abcd ef",
        "abcdabcda",  # a run id has a dash after 8 digits
        "abcd-abc",
        "-abc",
        made_id() + "0",  # longer than a run id
        made_id().replace("-", ""),  # a UUID without its dashes is no run id
        "é" * 4,
        "ab%cd",
    ],
)
def test_a_run_id_that_is_not_the_start_of_one_is_400(client: Any, bad: str) -> None:
    assert "run_id must be" in error_of(client, run_id=bad)


def test_a_start_shared_by_too_many_runs_is_400_not_a_long_read(
    app: Any, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(id_index, "MAX_MATCHES", 3)
    ours = create(app, [made_id("aaaa") for _ in range(4)])
    assert "more than 3 runs" in error_of(client, run_id="aaaa")
    # One more character narrows it; a whole id never needs the index.
    assert len(listed(client, run_id=ours[0][:8])) == 1
    assert listed(client, run_id=ours[1]) == [ours[1]]


def test_expired_runs_leave_the_id_index_when_a_search_meets_them(
    app: Any, client: Any, r: redis.Redis
) -> None:
    ours = create(app, [made_id("5eed"), made_id("5eed")])
    assert listed(client, run_id="5eed") == ours[::-1]
    r.delete(*keys.run_keys(ours[0]))  # as its TTL would
    assert listed(client, run_id="5eed") == [ours[1]]
    assert r.zscore(keys.run_ids(), ours[0]) is None
    assert r.zscore(keys.runs_index(), ours[0]) is None
    assert r.zscore(keys.run_ids(), ours[1]) == 0


def test_the_catch_up_reads_only_runs_created_since_the_last(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scored by hand: whole seconds apart, so only the overlap is read again."""
    second = 1_000_000
    r.zadd(keys.runs_index(), {"a": 1 * second, "b": 5 * second, "c": 10 * second})
    assert id_index.catch_up(r) == 3
    assert id_index.catch_up(r) == 1  # `c`, within the overlap of the watermark
    r.zadd(keys.runs_index(), {"d": 20 * second})
    assert id_index.catch_up(r) == 2  # `d`, and `c` again
    assert id_index.catch_up(r) == 1  # `d` again: `c` is more than the overlap older
    assert r.zrange(keys.run_ids(), 0, -1) == ["a", "b", "c", "d"]
    # Batches that end on a shared score go on past it, even when a batch is all ties.
    monkeypatch.setattr(id_index, "SYNC_BATCH", 2)
    r.delete(keys.run_ids(), keys.run_ids_synced())
    r.zadd(keys.runs_index(), {"e": 20 * second, "f": 20 * second, "g": 30 * second})
    id_index.catch_up(r)
    assert r.zrange(keys.run_ids(), 0, -1) == ["a", "b", "c", "d", "e", "f", "g"]
