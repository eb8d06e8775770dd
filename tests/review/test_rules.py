"""The review app's pure rules: byte ranges, session cookies, object ids, query values."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from review.auth import LoginThrottle, Sessions, password_matches, safe_next
from review.files import Unsatisfiable, parse_range
from review.queries import BadQuery, parse_ref


@pytest.mark.parametrize(
    "header, span",
    [(None, None), ("bytes=0-0", (0, 0)), ("bytes=10-", (10, 99)), ("bytes=-10", (90, 99)), ("bytes=-500", (0, 99)),
     ("bytes=50-5000", (50, 99)), ("bytes=5-2", None), ("bytes=0-1,5-6", None), ("items=0-1", None),
     ("bytes=a-b", None), ("bytes=-", None), ("bytes=1-x", None)],
)  # fmt: skip
def test_ranges(header, span):
    assert parse_range(header, 100) == span


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges(header):
    with pytest.raises(Unsatisfiable):
        parse_range(header, 100)


def test_sessions_are_signed_expire_and_revoke():
    sessions = Sessions(lifetime_s=3600)
    cookie = sessions.issue()
    assert sessions.valid(cookie)
    expiry, session_id, signature = cookie.split(".")
    assert not sessions.valid(f"{int(expiry) + 9999}.{session_id}.{signature}")  # a longer life, forged
    assert not Sessions(key=b"another key").valid(cookie)  # another app's (or before a restart)
    expired = Sessions(lifetime_s=-1)
    assert not expired.valid(expired.issue())
    assert not sessions.valid("") and not sessions.valid("x" * 500) and not sessions.valid("a.b.c")
    sessions.revoke(cookie)
    assert not sessions.valid(cookie) and sessions.valid(sessions.issue())


def test_password_compare_and_next():
    assert password_matches("s3cret", SecretStr("s3cret"))
    assert not password_matches("s3cre", SecretStr("s3cret")) and not password_matches(
        "", SecretStr("s3cret")
    )
    assert safe_next("/objects/x?y=1") == "/objects/x?y=1"
    assert safe_next("//evil.example") == safe_next("https://evil.example") == safe_next(None) == "/"


@pytest.mark.parametrize("ref", ["", "!!!", "W10", "WyJhIiwiMSIsImIiLCJjIl0", "WyJhIix0cnVlLCJiIiwiYyJd"])
def test_object_ids_that_are_not(ref):
    with pytest.raises(BadQuery):
        parse_ref(ref)


def test_login_throttle_counts_failures_per_client():
    throttle = LoginThrottle(failures=3, window_s=3600)
    for _ in range(3):
        assert not throttle.blocked("10.0.0.1")
        throttle.failed("10.0.0.1")
    assert throttle.blocked("10.0.0.1") and not throttle.blocked("10.0.0.2")
    aged = LoginThrottle(failures=1, window_s=0.0)
    aged.failed("10.0.0.1")
    assert not aged.blocked("10.0.0.1")  # failures age out


def test_a_search_asked_again_at_once_is_answered_from_the_last_answer():
    """Viewers searching alike cost the server one query a few seconds; others are asked anew."""
    import asyncio

    from review import app as review_app
    from review.app import Readers

    asked: list[str] = []

    class Sink:  # the readers only connect through the sink: a connection that counts reads
        def connect(self):
            return self

        def close(self):
            pass

    readers = Readers(Sink())  # type: ignore[arg-type]

    def read(what: str):
        def call(_ch):
            asked.append(what)
            return what

        return call

    async def ask():
        together = await asyncio.gather(*(readers.run(read("a"), key="a") for _ in range(5)))
        again = await readers.run(read("a"), key="a")
        other = await readers.run(read("b"), key="b")
        unkeyed = [await readers.run(read("c")) for _ in range(2)]
        return together, again, other, unkeyed

    together, again, other, unkeyed = asyncio.run(ask())
    assert together == ["a"] * 5 and again == "a" and other == "b" and unkeyed == ["c", "c"]
    assert asked == ["a", "b", "c", "c"]
    readers._answers[("a")] = (readers._answers["a"][0] - review_app.ANSWER_TTL_S, "a")  # an old answer
    assert asyncio.run(readers.run(read("a"), key="a")) == "a" and asked[-1] == "a" and len(asked) == 5
