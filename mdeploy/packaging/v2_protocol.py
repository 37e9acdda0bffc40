"""Tensor types as Triton and KServe name them, and requests in the Open Inference Protocol v2 (HTTP/JSON).

Why one module: Triton's config.pbtxt (ModelConfig DataType), the v2 request files that the triton and kserve
packages carry, the smoke test's requests and answers, and the repository runner all name a tensor's type; one table
keeps them agreeing.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mdeploy.packaging.base import Feed

# numpy dtype name -> (ModelConfig DataType name, the Open Inference Protocol v2 "datatype")
DTYPES = {
    "bool": ("TYPE_BOOL", "BOOL"),
    "uint8": ("TYPE_UINT8", "UINT8"),
    "uint16": ("TYPE_UINT16", "UINT16"),
    "uint32": ("TYPE_UINT32", "UINT32"),
    "uint64": ("TYPE_UINT64", "UINT64"),
    "int8": ("TYPE_INT8", "INT8"),
    "int16": ("TYPE_INT16", "INT16"),
    "int32": ("TYPE_INT32", "INT32"),
    "int64": ("TYPE_INT64", "INT64"),
    "float16": ("TYPE_FP16", "FP16"),
    "float32": ("TYPE_FP32", "FP32"),
    "float64": ("TYPE_FP64", "FP64"),
    "bfloat16": ("TYPE_BF16", "BF16"),
    "object": ("TYPE_STRING", "BYTES"),
    "str": ("TYPE_STRING", "BYTES"),
}
NUMPY = {config: name for name, (config, _) in DTYPES.items() if name not in ("str",)}
NUMPY["TYPE_STRING"] = "object"


def v2_request(feed: Feed) -> dict[str, Any]:
    """One v2 JSON request: each input's name, shape, datatype and row-major data."""
    return {"inputs": [{"name": name, "shape": list(array.shape), "datatype": DTYPES[array.dtype.name][1],
                        "data": array.reshape(-1).tolist()} for name, array in feed.items()]}


def v2_encode(feed: Feed) -> bytes:
    return json.dumps(v2_request(feed)).encode()


def v2_decode(body: bytes) -> dict[str, np.ndarray]:
    """The v2 response's outputs as arrays (datatype and shape as the server sent them)."""
    answer = json.loads(body)
    v2 = {dt: name for name, (_, dt) in DTYPES.items() if name != "str"}
    return {o["name"]: np.asarray(o["data"], dtype=v2.get(o["datatype"], "object")).reshape(o["shape"])
            for o in answer.get("outputs", [])}
