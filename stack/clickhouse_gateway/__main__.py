import sys

from stack.clickhouse_gateway.server import main

sys.exit(main())
