"""mdeploy: convert, optimize, validate and benchmark trained models for deployment."""

import os as _os

__version__ = "0.1.0"

# onnxruntime's telemetry (1DS) writes a `.ses` file into the temp folder and a session database under
# ~/.cache/Microsoft at every session unless this is set when its library loads; it is set here, before any module
# of mdeploy can import onnxruntime (some import it at their top). A value the user set is kept.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
