"""`POST /api/runs` with an `Idempotency-Key` (SPEC §6).

The same key with the same body returns the first run (200) instead of starting
another; with a different body it is 409. The app sends its Celery messages to a broker
database no worker reads, so each test can count them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from conftest import url_of, wait_for
from werkzeug.serving import make_server

BODY = {"scenario_id": "hello_sequence", "input": {"name": "Ada"}}


@pytest.fixture
def app(app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis) -> Any:
    return app_factory(broker_url=url_of(broker))


def post(client: Any, key: str | None, body: dict[str, Any] = BODY) -> Any:
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post("/api/runs", json=body, headers=headers)


def run_ids(r: redis.Redis) -> list[str]:
    return list(r.zrange("stepstream:runs", 0, -1))


def assert_error(response: Any, status: int) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}


def test_same_key_and_body_returns_the_first_run(
    client: Any, r: redis.Redis, broker: redis.Redis
) -> None:
    first = post(client, "order-42")
    assert first.status_code == 202
    again = post(client, "order-42")
    assert again.status_code == 200, again.get_data(as_text=True)
    assert again.get_json()["run_id"] == first.get_json()["run_id"]
    snapshot = client.get(again.headers["Location"]).get_json()
    assert again.get_json() == {field: snapshot[field] for field in again.get_json()}
    assert again.headers["Location"] == first.headers["Location"]
    assert run_ids(r) == [first.get_json()["run_id"]]
    assert broker.llen("stepstream") == 1


def test_replay_is_the_summary_of_the_first_run(client: Any) -> None:
    first = post(client, "k1").get_json()
    again = post(client, "k1").get_json()
    assert again == first


def test_many_replays_start_nothing_more(client: Any, r: redis.Redis, broker: redis.Redis) -> None:
    statuses = [post(client, "same").status_code for _ in range(5)]
    assert statuses == [202, 200, 200, 200, 200]
    assert len(run_ids(r)) == 1
    assert broker.llen("stepstream") == 1


@pytest.mark.parametrize(
    "other",
    [
        {"scenario_id": "hello_sequence", "input": {"name": "Bob"}},
        {"scenario_id": "hello_sequence", "input": {"name": "Ada", "greeting": "Hi"}},
        {"scenario_id": "fan_out_join", "input": {}},
    ],
    ids=["other-input", "more-input", "other-scenario"],
)
def test_same_key_with_another_body_is_409_and_creates_nothing(
    client: Any, r: redis.Redis, broker: redis.Redis, other: dict[str, Any]
) -> None:
    first = post(client, "order-42")
    assert first.status_code == 202
    assert_error(post(client, "order-42", other), 409)
    assert run_ids(r) == [first.get_json()["run_id"]]
    assert len(list(r.scan_iter("stepstream:run:*:steps"))) == 1
    assert broker.llen("stepstream") == 1
    # The first body still gets its run back.
    assert post(client, "order-42").get_json()["run_id"] == first.get_json()["run_id"]


def test_different_keys_start_different_runs(
    client: Any, r: redis.Redis, broker: redis.Redis
) -> None:
    a = post(client, "key-a")
    b = post(client, "key-b")
    assert (a.status_code, b.status_code) == (202, 202)
    assert a.get_json()["run_id"] != b.get_json()["run_id"]
    assert sorted(run_ids(r)) == sorted([a.get_json()["run_id"], b.get_json()["run_id"]])
    assert broker.llen("stepstream") == 2


def test_without_a_key_every_request_starts_a_run(client: Any, r: redis.Redis) -> None:
    assert [post(client, None).status_code for _ in range(3)] == [202, 202, 202]
    assert len(run_ids(r)) == 3


@pytest.mark.parametrize(
    "key",
    [
        "k" * 201,
        "k" * 300,
        "two words",
        " leading-space",
        "tab\there",
        "clé",
        "",
    ],
    ids=["201-chars", "300-chars", "space", "leading-space", "tab", "non-ascii", "empty"],
)
def test_invalid_key_is_400_and_creates_nothing(
    client: Any, r: redis.Redis, broker: redis.Redis, key: str
) -> None:
    assert_error(post(client, key), 400)
    assert run_ids(r) == []
    assert list(r.scan_iter("stepstream:run:*")) == []
    assert list(r.scan_iter("stepstream:idem:*")) == []
    assert broker.llen("stepstream") == 0


def test_longest_valid_key_is_accepted(client: Any) -> None:
    key = "".join(chr(33 + i % 94) for i in range(200))
    assert post(client, key).status_code == 202
    assert post(client, key).status_code == 200


def test_a_refused_request_does_not_use_up_its_key(client: Any, r: redis.Redis) -> None:
    bad = {"scenario_id": "hello_sequence", "input": {"name": ""}}
    assert post(client, "retry-me", bad).status_code == 422
    assert post(client, "retry-me", {"scenario_id": "nope", "input": {}}).status_code == 404
    assert post(client, "retry-me").status_code == 202
    assert len(run_ids(r)) == 1


def test_a_request_that_could_not_be_enqueued_does_not_use_up_its_key(
    app_factory: Callable[..., Any], client: Any, r: redis.Redis
) -> None:
    cut_off = app_factory(broker_url="redis://127.0.0.1:1/0").test_client()
    assert_error(post(cut_off, "after-outage"), 503)
    assert run_ids(r) == []
    assert post(client, "after-outage").status_code == 202
    assert len(run_ids(r)) == 1


def test_concurrent_requests_with_one_key_start_one_run(
    app: Any, r: redis.Redis, broker: redis.Redis
) -> None:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/api/runs"
    barrier = threading.Barrier(8)

    def submit(_: int) -> httpx.Response:
        with httpx.Client(timeout=10) as http:
            barrier.wait()
            return http.post(url, json=BODY, headers={"Idempotency-Key": "race"})

    try:
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(submit, range(8)))
    finally:
        server.shutdown()
        thread.join(timeout=5)
    statuses = sorted(response.status_code for response in responses)
    # One request wins; the others see its run (200) or that it is still being made (409).
    assert statuses.count(202) == 1, statuses
    assert set(statuses) <= {200, 202, 409}, statuses
    winner = next(resp.json()["run_id"] for resp in responses if resp.status_code == 202)
    assert {resp.json()["run_id"] for resp in responses if resp.status_code == 200} <= {winner}
    assert run_ids(r) == [winner]
    assert broker.llen("stepstream") == 1


def test_the_same_body_written_differently_is_the_same_request(client: Any, r: redis.Redis) -> None:
    first = post(client, "spacing")
    compact = '{"input":{"name":"Ada"},"scenario_id":"hello_sequence"}'
    again = client.post(
        "/api/runs",
        data=compact,
        content_type="application/json",
        headers={"Idempotency-Key": "spacing"},
    )
    assert again.status_code == 200
    assert again.get_json()["run_id"] == first.get_json()["run_id"]
    assert len(run_ids(r)) == 1


def queued_messages(broker: redis.Redis) -> int:
    """Messages waiting in the broker database, whatever the queue's name."""
    return sum(broker.llen(k) for k in broker.scan_iter() if broker.type(k) == b"list")


@pytest.fixture
def quick_claims(monkeypatch: pytest.MonkeyPatch) -> float:
    """Claims are abandoned after half a second instead of a minute."""
    from tasks import idempotency

    monkeypatch.setattr(idempotency, "CLAIM_TIMEOUT_S", 0.5)
    return 0.5


def dead_claimant(app: Any, key: str, record_run: bool) -> str:
    """Do what a request does up to where its process dies: claim `key` and, with
    `record_run`, record its run; never send the run, never answer."""
    from web import api
    from web.services import services

    run_id = str(uuid.uuid4())
    with app.test_request_context():
        req = api.RunRequest.model_validate(BODY)
        assert api.claim_idempotency_key(key, run_id, req) is None
        if record_run:
            svc = services()
            scenario = svc.catalog.get(BODY["scenario_id"])
            svc.store.create_run(run_id, scenario, api.with_defaults(scenario, req.input))
    return run_id


def test_a_key_whose_claimant_died_before_recording_its_run_is_usable_again(
    app: Any, r: redis.Redis, broker: redis.Redis, quick_claims: float
) -> None:
    client = app.test_client()
    dead_claimant(app, "crashed", record_run=False)
    assert_error(post(client, "crashed"), 409)  # the claimant might still be at work

    taken = wait_for(
        lambda: (response := post(client, "crashed")).status_code == 202 and response,
        timeout=10,
        what="the abandoned key to be taken over",
    )
    run_id = taken.get_json()["run_id"]
    assert run_ids(r) == [run_id]
    assert queued_messages(broker) == 1
    again = post(client, "crashed")
    assert again.status_code == 200 and again.get_json()["run_id"] == run_id


def test_a_run_recorded_by_a_claimant_that_died_is_sent_by_the_next_request(
    app: Any, r: redis.Redis, broker: redis.Redis, quick_claims: float
) -> None:
    """It died between recording the run and sending it: the retry sends that run
    (once), instead of leaving it queued for ever or starting a second one."""
    client = app.test_client()
    orphan = dead_claimant(app, "half-done", record_run=True)
    assert queued_messages(broker) == 0

    def sent() -> bool:
        # Before and after the claim is abandoned, the answer is that run.
        response = post(client, "half-done")
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["run_id"] == orphan
        return queued_messages(broker) == 1

    wait_for(sent, timeout=10, what="the orphan run to be sent")
    assert run_ids(r) == [orphan]
    assert queued_messages(broker) == 1


def test_a_slow_claimant_that_lost_its_key_starts_nothing(
    app: Any, r: redis.Redis, broker: redis.Redis, quick_claims: float
) -> None:
    """Never two runs for one key: a claimant that was only slow (not dead) and finds
    its key taken over undoes the run it recorded and answers with the other one."""
    from web import api
    from web.services import services

    client = app.test_client()
    slow = dead_claimant(app, "slow", record_run=False)
    taken = wait_for(
        lambda: (response := post(client, "slow")).status_code == 202 and response,
        timeout=10,
        what="the key to be taken over",
    )
    winner = taken.get_json()["run_id"]
    with app.test_request_context():
        req = api.RunRequest.model_validate(BODY)
        svc = services()
        scenario = svc.catalog.get(BODY["scenario_id"])
        svc.store.create_run(slow, scenario, api.with_defaults(scenario, req.input))
        assert api.confirm_idempotency_key("slow", slow, req) == winner
        api.undo_run(slow, "slow")
    assert run_ids(r) == [winner]
    assert queued_messages(broker) == 1
    assert post(client, "slow").get_json()["run_id"] == winner
