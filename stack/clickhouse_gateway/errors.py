"""Failures reported to the client the way ClickHouse reports them: status, code header, text."""

from __future__ import annotations

import re

# ClickHouse's exceptionCodeToHTTPStatus, by error name; anything else is a 500.
_STATUS = {
    "REQUIRED_PASSWORD": 401, "UNKNOWN_USER": 403, "WRONG_PASSWORD": 403, "AUTHENTICATION_FAILED": 403,
    "ACCESS_DENIED": 403, "SET_NON_GRANTED_ROLE": 403, "QUERY_IS_TOO_LARGE": 413, "NOT_IMPLEMENTED": 501,
    "TIMEOUT_EXCEEDED": 408, "SOCKET_TIMEOUT": 503, "CANNOT_OPEN_FILE": 503, "CANNOT_SCHEDULE_TASK": 503,
    "ABORTED": 503, "NOT_FOUND": 404,
    **dict.fromkeys(
        "BAD_ARGUMENTS CANNOT_COMPILE_REGEXP CANNOT_PARSE_TEXT CANNOT_PARSE_ESCAPE_SEQUENCE "
        "CANNOT_PARSE_QUOTED_STRING CANNOT_PARSE_DATE CANNOT_PARSE_DATETIME CANNOT_PARSE_NUMBER "
        "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING CANNOT_PARSE_IPV4 CANNOT_PARSE_IPV6 CANNOT_PARSE_UUID "
        "CANNOT_PARSE_INPUT_ASSERTION_FAILED DUPLICATE_COLUMN ILLEGAL_COLUMN UNKNOWN_ELEMENT_IN_AST "
        "UNKNOWN_TYPE_OF_AST_NODE THERE_IS_NO_COLUMN TOO_DEEP_AST TOO_BIG_AST UNEXPECTED_AST_STRUCTURE "
        "SYNTAX_ERROR INCORRECT_DATA TYPE_MISMATCH VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE".split(), 400),
    **dict.fromkeys(
        "UNKNOWN_TABLE UNKNOWN_FUNCTION UNKNOWN_IDENTIFIER UNKNOWN_TYPE UNKNOWN_STORAGE UNKNOWN_DATABASE "
        "UNKNOWN_SETTING UNKNOWN_DIRECTION_OF_SORTING UNKNOWN_AGGREGATE_FUNCTION UNKNOWN_FORMAT "
        "UNKNOWN_DATABASE_ENGINE UNKNOWN_TYPE_OF_QUERY UNKNOWN_ROLE".split(), 404),
}  # fmt: skip
_CODE = re.compile(r"Code: (\d+)\.")
_NAME = re.compile(r"\(([A-Z0-9_]+)\)(?: \(version [^)]*\))?\s*\Z")


class GatewayError(Exception):
    """`code` goes to X-ClickHouse-Exception-Code (0: none); `name` picks the HTTP status."""

    def __init__(self, code: int, name: str, text: str) -> None:
        super().__init__(text)
        self.code, self.name, self.text = code, name, text

    @classmethod
    def of(cls, code: int, name: str, message: str) -> GatewayError:
        return cls(code, name, f"Code: {code}. DB::Exception: {message}. ({name})")

    @classmethod
    def from_engine(cls, exc: BaseException) -> GatewayError:
        """chdb raises with ClickHouse's own `Code: N. DB::Exception: ... (NAME)` text inside."""
        text = str(exc)
        code = _CODE.search(text)
        if code is None:
            return cls.of(1001, "STD_EXCEPTION", text)
        text = text[code.start() :].strip()
        name = _NAME.search(text)
        return cls(int(code.group(1)), name.group(1) if name else "", text)

    @property
    def status(self) -> int:
        return _STATUS.get(self.name, 500)

    def body(self, version: str) -> bytes:
        text = self.text if "(version " in self.text else f"{self.text} (version {version})"
        return text.encode() + b"\n"


def shutting_down() -> GatewayError:
    return GatewayError.of(236, "ABORTED", "Server is shutting down")
