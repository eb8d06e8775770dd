"""nvrflow's block types: `prefect block register -m blocks` registers all three."""

from blocks.clickhouse import ClickHouseSink
from blocks.model_server import TFServingModel
from blocks.recorder import HikvisionRecorder

__all__ = ["ClickHouseSink", "HikvisionRecorder", "TFServingModel"]
