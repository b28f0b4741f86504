"""Export a hardened classifier as a TensorFlow SavedModel with a typed record.

``rk.export(model, path, ...)`` writes the SavedModel and ``robustkit.json`` (an
:class:`ExportRecord`: data, threat model, training, measurements, versions);
``rk.load(path)`` returns ``(saved_model, record)``.

Example:

>>> import os, tempfile, robustkit as rk
>>> path = os.path.join(tempfile.mkdtemp(), "m")
>>> record = rk.export(rk.models.small_cnn((8, 8, 1), width=4, dense=8), path,
...                    metadata={"dataset": "digits"})
>>> from robustkit.export import read_record
>>> read_record(path).dataset
'digits'
"""

from robustkit.export.record import (
    FORMAT,
    FORMAT_VERSION,
    METADATA_FILE,
    Check,
    DataRecord,
    ExportRecord,
    Measurement,
    ThreatRecord,
    TrainingRecord,
)
from robustkit.export.savedmodel import (
    build_record,
    export,
    load_exported,
    read_record,
    write_record,
)

#: robustkit 0.1's name
read_metadata = read_record

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_FILE",
    "Check",
    "DataRecord",
    "ExportRecord",
    "Measurement",
    "ThreatRecord",
    "TrainingRecord",
    "build_record",
    "export",
    "load_exported",
    "read_metadata",
    "read_record",
    "write_record",
]
