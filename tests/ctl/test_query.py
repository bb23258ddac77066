"""Query strings and path segments ctl builds without urllib.parse are the ones urllib builds."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from hypothesis import given
from hypothesis import strategies as st

from servermgr.ctl import client

WORDS = st.text(alphabet="abcXYZ09_.-~ /&=+%?#é", max_size=12)
VALUES = st.one_of(WORDS, st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())


@given(st.dictionaries(WORDS, VALUES, max_size=4))
def test_query_is_urlencode(params: dict[str, object]) -> None:
    assert client.query(params) == urlencode(params)


def test_job_ids_and_names_pass_as_they_are() -> None:
    assert client.query({"output": "false"}) == "output=false"
    assert client.query({"offset": 0, "limit": 1048576}) == "offset=0&limit=1048576"


@given(WORDS)
def test_path_segment_is_quoted_as_before(ref: str) -> None:
    assert client.segment(ref) == quote(ref, safe="")
