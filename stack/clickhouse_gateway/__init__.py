"""ClickHouse's HTTP interface, the part clickhouse-connect uses, served by the chdb engine.

chdb locks its data folder to one process, so one gateway process owns the folder and every
other process talks to it over HTTP exactly as it would to a production ClickHouse server.

    python -m stack.clickhouse_gateway --port P --data-dir DIR [--user default] --password-env VAR
"""
