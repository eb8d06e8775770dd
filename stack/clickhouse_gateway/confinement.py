"""What the gateway refuses that a real ClickHouse server refuses an ordinary user.

chdb runs as clickhouse-local does: `file()` reads (and `INSERT INTO FUNCTION file()` writes)
any path of the machine, `INTO OUTFILE` writes one, and the table functions and engines that
reach other servers or run programs need no grant. A real server confines `file()` to its user
files folder (the gateway has none, so every path is outside it), refuses `INTO OUTFILE` over
HTTP, and gives an ordinary user no grant on the other sources.

The check reads ClickHouse's own rendering of the statement (`formatQuerySingleLine`, which
parses without running anything): quoting or escaping a name (`` `\\x66ile` ``) does not get
past it, and a second statement after a `;` is refused as a real server's HTTP interface does.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from stack.clickhouse_gateway.errors import GatewayError

# Table functions, engines, dictionary sources and functions that read or write the machine's files.
FILE_ACCESS = frozenset({"file", "filecluster", "iceberglocal", "deltalakelocal", "hudilocal"})
# Sources an ordinary user holds no grant on: other servers, other databases, programs.
OTHER_SOURCES = frozenset(
    """url urlcluster http s3 s3cluster gcs oss cosn azureblobstorage azureblobstoragecluster hdfs
    hdfscluster iceberg icebergs3 icebergazure iceberghdfs icebergs3cluster icebergazurecluster
    iceberghdfscluster deltalake deltalakeazure deltalakecluster hudi hudicluster remote
    remotesecure cluster clusterallreplicas mysql postgresql sqlite odbc jdbc mongodb redis
    executable executablepool kafka rabbitmq nats filelog hive arrowflight ytsaurus""".split()
)
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_INTO_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.I)


def refusal(sql: str, render: Callable[[str], str]) -> GatewayError | None:
    """The error a real server answers an ordinary user with, or None when `sql` may run.

    `render` returns ClickHouse's one-line rendering of one statement, or raises GatewayError.
    A statement it cannot parse is left to run, so that ClickHouse reports its own syntax error.
    """
    try:
        text = _STRING.sub("''", render(sql))
    except GatewayError as exc:
        if "Multi-statements are not allowed" in exc.text:
            return GatewayError.of(62, "SYNTAX_ERROR", "Syntax error (Multi-statements are not allowed)")
        if exc.name == "SYNTAX_ERROR":
            return None
        return exc
    if _INTO_OUTFILE.search(text):
        return GatewayError.of(358, "INTO_OUTFILE_NOT_ALLOWED", "INTO OUTFILE is not allowed")
    for name in _CALL.findall(text):
        if name.lower() in FILE_ACCESS:
            return GatewayError.of(
                291, "PATH_ACCESS_DENIED",
                f"{name}: file access is not inside the user files folder (this server has none)",
            )  # fmt: skip
        if name.lower() in OTHER_SOURCES:
            return GatewayError.of(
                497, "ACCESS_DENIED", "Not enough privileges. To execute this query, it's necessary to have "
                f"the grant READ ON {name.upper()} (an ordinary user has none on this server)",
            )  # fmt: skip
    return None
