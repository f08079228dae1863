"""modelmon's Python client: log predictions and late labels from a model service.

    from modelmon.client import PredictionLogger

    logger = PredictionLogger(url="http://exporter:9188/ingest")   # or path="preds.jsonl"
    logger.log(model="credit", id=req_id, features=x, prediction=1, score=0.83, latency_ms=12.4)
    logger.label(model="credit", id=req_id, label=0)               # later, when the truth is known

`log()` never blocks and never raises (see logger.py); `stats()` counts every record's fate.
Importing this package loads only the standard library and orjson: no numpy, flask, requests
or prometheus_client (that one only when a registry is given).
"""
from modelmon.client.logger import PredictionLogger
from modelmon.client.records import InvalidRecord, InvalidType
from modelmon.client.transport import Delivery, FileTransport, HttpTransport

__all__ = ["PredictionLogger", "InvalidRecord", "InvalidType", "Delivery", "FileTransport", "HttpTransport"]
