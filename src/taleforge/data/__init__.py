"""Data preparation: any creative-writing dataset to a clean, tokenized, reproducible set."""

from taleforge.data.prepare import PreparedData, load_prepared, prepare
from taleforge.data.readers import ReadResult, detect_format, read_dataset
from taleforge.data.records import DataError, Record

__all__ = [
    "DataError",
    "PreparedData",
    "ReadResult",
    "Record",
    "detect_format",
    "load_prepared",
    "prepare",
    "read_dataset",
]
