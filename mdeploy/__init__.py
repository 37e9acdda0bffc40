"""mdeploy: convert, optimize, validate and benchmark trained models for deployment."""

import atexit as _atexit
import os as _os
import shutil as _shutil
import tempfile as _tempfile

__version__ = "0.1.0"

# Nothing of mdeploy's stays behind in the temp folder or the home folder, so two switches are set here, before any
# module of mdeploy can import onnxruntime or torch (some import them at their top); a value the user set is kept.
# - onnxruntime's telemetry (1DS) writes a `.ses` file into the temp folder and a session database under
#   ~/.cache/Microsoft at every session unless ORT_DISABLE_TELEMETRY is set when its library loads.
# - torch creates `$TMPDIR/torchinductor_<user>` (its compile cache) when torch._dynamo is imported and again at every
#   torch.onnx export, and leaves it there, empty: mdeploy compiles nothing, so the cache is a folder of this process's
#   own, named but not created here, removed at exit.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
if "TORCHINDUCTOR_CACHE_DIR" not in _os.environ:
    _torch_cache = _os.path.join(_tempfile.gettempdir(), f"mdeploy-torch-{_os.getpid()}")
    _os.environ["TORCHINDUCTOR_CACHE_DIR"] = _torch_cache
    _atexit.register(_shutil.rmtree, _torch_cache, True)
