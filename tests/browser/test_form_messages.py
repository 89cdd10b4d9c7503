"""The run form's messages in a real headless Chromium: its own checks word each rule as
the API's 422 does (tasks/input_messages.py), without the field's name, which its label
shows; a required field of only spaces is refused, an optional one is not."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import LiveServer

SCENARIO = "test_input_messages"

#: A real Chromium: left out of `make test-fast`.
pytestmark = pytest.mark.slow


@pytest.fixture
def form(live_server: LiveServer, page: Any) -> Any:
    page.goto(f"{live_server.url}/#scenarios")
    found = page.locator(f'form[data-scenario="{SCENARIO}"]')
    found.wait_for()
    return found


def fill(form: Any, **values: str) -> None:
    for name, value in values.items():
        form.locator(f'[name="{name}"]').fill(value)
    form.get_by_role("button", name="Start run").click()


def error_of(form: Any, field: str) -> str:
    return str(form.locator(f'[data-field="{field}"]').inner_text())


def api_message(server: LiveServer, run_input: dict[str, Any], path: str) -> str:
    """The API's message at `path` for this input, less its "name: "."""
    response = httpx.post(
        f"{server.url}/api/runs", json={"scenario_id": SCENARIO, "input": run_input}
    )
    assert response.status_code == 422
    [message] = [d["message"] for d in response.json()["error"]["details"] if d["path"] == path]
    return str(message).split(": ", 1)[1]


def test_a_pattern_is_explained_in_words_as_the_api_does(
    live_server: LiveServer, page: Any, form: Any
) -> None:
    fill(form, name="Ada", code="ab", url="ftp://x", tag="x")
    code = "must be a lower-case word followed by a digit"
    assert error_of(form, "code") == code
    assert error_of(form, "url") == (
        "is not in the expected format (The http:// or https:// address to fetch)"
    )
    assert error_of(form, "tag") == "is not in the expected format (pattern ^#)"
    for field, value in (("code", "ab"), ("url", "ftp://x"), ("tag", "x")):
        run_input = {"name": "Ada", "code": "ab1", field: value}
        assert api_message(live_server, run_input, f"$.{field}") == error_of(form, field)
    assert page.url.endswith("/#scenarios")  # no run was started


def test_a_blank_required_name_is_refused_and_a_blank_optional_one_is_not(
    live_server: LiveServer, page: Any, form: Any
) -> None:
    fill(form, name="   ", code="ab1", nickname="  ")
    assert error_of(form, "name") == "must not be blank"
    assert error_of(form, "nickname") == ""
    assert api_message(live_server, {"name": "   ", "code": "ab1"}, "$.name") == (
        "must not be blank"
    )
    fill(form, name="\t \t")
    assert error_of(form, "name") == "must not be blank"
    fill(form, name="")
    assert error_of(form, "name") == "is required"
    assert page.url.endswith("/#scenarios")


def test_the_other_rules_read_as_the_apis(live_server: LiveServer, page: Any, form: Any) -> None:
    fill(form, name="ab", code="ab1", count="0", ratio="1")
    assert error_of(form, "name") == "must be at least 3 characters"
    assert error_of(form, "count") == "must be at least 1"
    assert error_of(form, "ratio") == "must be less than 1"
    fill(form, name="a" * 9, count="2.5", ratio="0.5")
    assert error_of(form, "name") == "must be at most 8 characters"
    assert error_of(form, "count") == "must be a whole number"
    assert error_of(form, "ratio") == ""


def test_the_apis_messages_land_by_their_fields(
    live_server: LiveServer, page: Any, form: Any
) -> None:
    # Rules only the API checks: the list's items and length.
    fill(form, name="Ada", code="ab1", flags='["a", 2]')
    flags = form.locator('[data-field="flags"]')
    flags.filter(has_text="flags[1]: must be a string").wait_for()
    fill(form, flags='["a", "b", "c"]')
    flags.filter(has_text="must have at most 2 items").wait_for()
    assert error_of(form, "flags") == "must have at most 2 items"  # its own: no "flags: "
    assert page.url.endswith("/#scenarios")


def test_a_pattern_only_the_server_reads_leaves_the_check_to_it(
    live_server: LiveServer, page: Any
) -> None:
    page.goto(f"{live_server.url}/#scenarios")
    form = page.locator('form[data-scenario="test_form_dialects"]')
    # Refused by the API (the form cannot read the pattern), in the same words.
    fill(form, code="ab")
    form.locator('[data-field="code"]', has_text="must be a-b").wait_for()
    # Accepted: the run starts.
    fill(form, code="a-b")
    page.wait_for_url(f"{live_server.url}/runs/**")
