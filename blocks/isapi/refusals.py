"""What a refused ISAPI request means, read from the HTTP status and the device's own words.

Hikvision firmware does not use HTTP statuses the way their names suggest: a 403 may mean
"this account lacks the right" (`lowPrivilege`), "wrong password" (`badAuthorization`) or
"this firmware does not take the request in that form" (`methodNotAllowed`, `notSupport`,
`invalidOperation`). Only the ResponseStatus body (`subStatusCode`, `statusString`) tells
them apart, and each calls for a different reaction: fail at once naming the user, fail
at once naming the credentials, or try the request in another documented form.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from blocks.isapi.parsing import parse_response_status, parse_user_check


class Refusal(Enum):
    WRONG_CREDENTIALS = "wrong credentials"
    NO_DIGEST_CHALLENGE = "401 without a digest challenge to answer"
    LOW_PRIVILEGE = "low privilege"
    REQUEST_FORM = "request form refused"
    UNAVAILABLE = "device unavailable"
    OTHER = "refused"


# Sub statuses (lower-cased) saying the request's method or shape is not one this firmware
# takes: another documented form of the same request may well be accepted.
FORM_SUB_STATUSES = frozenset(
    {
        "methodnotallowed",
        "notsupport",
        "invalidoperation",
        "badxmlcontent",
        "badxmlformat",
        "badparameters",
        "invalidcontent",
        "badurlformat",
    }
)
# Of those, the sub statuses saying the request body is not what the firmware's schema wants:
# the same method with another shape of body may be accepted.
BODY_SUB_STATUSES = frozenset({"badxmlcontent", "badxmlformat", "badparameters", "invalidcontent"})
# HTTP's own words for "not this method": no body needed to read them.
FORM_HTTP_STATUSES = frozenset({405, 501})
# Statuses that, with a form sub status or none at all, may be about the form (old
# firmware answers a POST it does not know with a bare 400 or 404).
FORM_WHEN_EXPLAINED = frozenset({400, 403, 404})
FORM_WHEN_UNEXPLAINED = frozenset({400, 404})


@dataclass(frozen=True)
class DeviceRefusal:
    http_status: int
    kind: Refusal
    words: str  # the device's own words ("lowPrivilege (Invalid Operation)"), "" when it gave none
    sub_status: str  # the ResponseStatus subStatusCode as sent, "" when none

    def summary(self) -> str:
        """`HTTP 403 methodNotAllowed (Invalid Operation)`: status plus the device's words."""
        return f"HTTP {self.http_status} {self.words or '(no explanation)'}"


def device_words(body: bytes) -> tuple[str, str]:
    """(words, subStatusCode) from a ResponseStatus or userCheck body; empty strings for anything else."""
    status = parse_response_status(body)
    if status is not None:
        return status.describe(), status.sub_status_code
    check = parse_user_check(body)
    if check is not None:
        return check.describe(), ""
    return "", ""


def means_bad_credentials(sub_status: str) -> bool:
    """badAuthorization and similar wording: the device doubts who we are, not what we may do."""
    sub = sub_status.lower()
    return "authoriz" in sub or "authentic" in sub


def means_low_privilege(sub_status: str) -> bool:
    """lowPrivilege (and noPrivilege-style spellings): a known user lacking a right."""
    return "privilege" in sub_status.lower()


def refuses_form(http_status: int, sub_status: str) -> bool:
    """True when the device turned down the request's method or shape, not its content."""
    sub = sub_status.lower()
    if http_status in FORM_HTTP_STATUSES:
        return True
    if http_status in FORM_WHEN_EXPLAINED and (sub in FORM_SUB_STATUSES or "xml" in sub):
        return True
    return http_status in FORM_WHEN_UNEXPLAINED and not sub


def refuses_body(refusal: DeviceRefusal) -> bool:
    """True when a form refusal is about the request's XML body rather than its method.

    A bare 400 says nothing either way; it counts as the body's, so the other bodies get their turn.
    """
    sub = refusal.sub_status.lower()
    if sub in BODY_SUB_STATUSES or "xml" in sub:
        return True
    return refusal.http_status == 400 and not sub


def classify(http_status: int, sub_status: str, challenge_answered: bool) -> Refusal:
    """Sort a non-2xx answer into what the client should do about it.

    `challenge_answered` says whether httpx's DigestAuth already answered a fresh challenge
    for this request: only then does a 401 mean the credentials themselves were refused.
    """
    if http_status == 401:
        return Refusal.WRONG_CREDENTIALS if challenge_answered else Refusal.NO_DIGEST_CHALLENGE
    if http_status >= 500 and http_status not in FORM_HTTP_STATUSES:
        return Refusal.UNAVAILABLE
    if means_bad_credentials(sub_status):
        return Refusal.WRONG_CREDENTIALS
    if means_low_privilege(sub_status):
        return Refusal.LOW_PRIVILEGE
    if refuses_form(http_status, sub_status):
        return Refusal.REQUEST_FORM
    return Refusal.OTHER


def read_refusal(http_status: int, body: bytes, challenge_answered: bool) -> DeviceRefusal:
    """The device's refusal of one request: its kind plus the device's own words."""
    words, sub_status = device_words(body)
    return DeviceRefusal(
        http_status, classify(http_status, sub_status, challenge_answered), words, sub_status
    )
