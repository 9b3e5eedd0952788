"""The Open Inference Protocol's gRPC service (`inference.GRPCInferenceService`, what Triton and
KServe speak, so `tritonclient.grpc` works) on the server's event loop, beside HTTP.

ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer are served; the
other Triton RPCs answer UNIMPLEMENTED. Every RPC is turned into the equivalent REST request and
answered by the same route code (server.ModelServer.handle -> app.InferenceApp): one decoder and
validator for both protocols (inputs travel as Triton's binary tensor extension, which has the
same layout as gRPC's raw_input_contents, typed `contents` are packed the same way), the same
batcher per model slot, rollout routing, shadow, request log and /metrics counting. A REST
refusal becomes the matching gRPC status with the same message (400 -> INVALID_ARGUMENT naming
the input, 404 -> NOT_FOUND, 413 -> RESOURCE_EXHAUSTED, 503 -> UNAVAILABLE, 500 -> INTERNAL).
Stubs: the ones tritonclient ships (tritonclient.grpc.service_pb2 / service_pb2_grpc).
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import numpy as np
from specml.runtime.serving.asgi import HttpRequest, HttpResponse
from specml.runtime.serving.tensors import serialize_strings
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
# typed InferTensorContents field and numpy dtype per datatype (raw_input_contents is preferred)
_CONTENTS = {
    "FP32": ("fp32_contents", "<f4"),
    "FP64": ("fp64_contents", "<f8"),
    "INT64": ("int64_contents", "<i8"),
    "INT32": ("int_contents", "<i4"),
    "BOOL": ("bool_contents", "?"),
}


def _model_path(name: str, version: str, tail: str = "") -> str:
    path = f"/v2/models/{name}"
    if version:
        path += f"/versions/{version}"
    return path + tail


def _get(path: str) -> HttpRequest:
    return HttpRequest("GET", path, "", {}, b"")


def _tensor_metadata(cls: Any, tensor: dict[str, Any]) -> Any:
    return cls(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])


def _packed(tensor: Any) -> bytes:
    """A typed `contents` tensor in the binary tensor extension's layout."""
    if tensor.datatype == "BYTES":
        return serialize_strings(np.array(list(tensor.contents.bytes_contents), dtype=object))
    field, dtype = _CONTENTS.get(tensor.datatype, ("fp32_contents", "<f4"))
    return np.asarray(list(getattr(tensor.contents, field)), dtype=dtype).tobytes()


def rest_infer_request(request: Any) -> HttpRequest:
    """The REST request (JSON header + binary tensors) equivalent to a ModelInferRequest."""
    raw = list(request.raw_input_contents)
    inputs, tails = [], []
    for i, tensor in enumerate(request.inputs):
        data = raw[i] if raw else _packed(tensor)
        tails.append(data)
        inputs.append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.shape),
                "parameters": {"binary_data_size": len(data)},
            }
        )
    header: dict[str, Any] = {"inputs": inputs, "parameters": {"binary_data_output": True}}
    if request.id:
        header["id"] = request.id
    if request.outputs:
        header["outputs"] = [
            {"name": o.name, "parameters": {"binary_data": True}} for o in request.outputs
        ]
    head = json.dumps(header, separators=(",", ":")).encode()
    return HttpRequest(
        "POST",
        _model_path(request.model_name, request.model_version, "/infer"),
        "",
        {"inference-header-content-length": str(len(head))},
        head + b"".join(tails),
    )


def infer_response(response: HttpResponse) -> Any:
    """A ModelInferResponse from the REST answer (outputs all binary, see rest_infer_request)."""
    size = int(response.headers.get("Inference-Header-Content-Length", len(response.body)))
    header = json.loads(response.body[:size])
    tail = response.body[size:]
    reply = pb.ModelInferResponse(
        model_name=header["model_name"],
        model_version=header["model_version"],
        id=header.get("id", ""),
    )
    offset = 0
    for out in header["outputs"]:
        reply.outputs.add(name=out["name"], datatype=out["datatype"], shape=out["shape"])
        length = out["parameters"]["binary_data_size"]
        reply.raw_output_contents.append(tail[offset : offset + length])
        offset += length
    return reply


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The gRPC face of a ModelServer (see the module docstring)."""

    def __init__(self, server: Any) -> None:
        self._server = server

    async def _rest(
        self, context: Any, request: HttpRequest, readiness: bool = False
    ) -> tuple[HttpResponse, Any]:
        """Answer through the REST routes; a refusal aborts the RPC with the matching status
        (a readiness probe's 503 is its answer, not a failure)."""
        response = await self._server.handle(request)
        if response.status >= 400 and not (readiness and response.status == 503):
            try:
                message = json.loads(response.body)["error"]
            except (ValueError, KeyError, TypeError):
                message = "internal server error"
            await context.abort(_STATUS.get(response.status, grpc.StatusCode.INTERNAL), message)
        document = (
            json.loads(response.body) if response.content_type == "application/json" else None
        )
        return response, document

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC names
        """Always live while the process answers."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Ready once the model (and feature reader) is loaded."""
        response, _ = await self._rest(context, _get("/v2/health/ready"), readiness=True)
        return pb.ServerReadyResponse(ready=response.status == 200)

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Whether this model (version) can answer."""
        path = _model_path(request.name, request.version, "/ready")
        response, _ = await self._rest(context, _get(path), readiness=True)
        return pb.ModelReadyResponse(ready=response.status == 200)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Server name, version and protocol extensions."""
        _, doc = await self._rest(context, _get("/v2"))
        return pb.ServerMetadataResponse(
            name=doc["name"], version=doc["version"], extensions=doc.get("extensions", [])
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Inputs and outputs: names, datatypes, shapes."""
        _, doc = await self._rest(context, _get(_model_path(request.name, request.version)))
        tensors = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=doc["name"],
            versions=[str(v) for v in doc.get("versions", [])],
            platform=doc.get("platform", ""),
            inputs=[_tensor_metadata(tensors, t) for t in doc.get("inputs", [])],
            outputs=[_tensor_metadata(tensors, t) for t in doc.get("outputs", [])],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        """One inference, batched and routed exactly like REST's /infer."""
        if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents needs one entry per input"
            )
        response, _ = await self._rest(context, rest_infer_request(request))
        return infer_response(response)


async def start_grpc(server: Any, host: str, port: int) -> tuple[Any, int]:
    """Start the gRPC service for `server` on the running loop; returns (grpc server, port)."""
    limit = int(server.config.max_body_bytes)
    grpc_server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, 64 * 1024 * 1024)),
            ("grpc.so_reuseport", 1),  # several workers share one port (workers.py)
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(server), grpc_server)
    bound = grpc_server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {host}:{port}")
    await grpc_server.start()
    return grpc_server, bound
