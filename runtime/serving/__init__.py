"""The local inference server: Open Inference Protocol (KServe v2 REST) over ONNX Runtime, with
dynamic batching, Prometheus metrics and predict-by-entity from the Feast online store.

Heavy imports (onnxruntime, feast) happen only when a server is built.
"""

from __future__ import annotations

from specml.runtime.serving.server import ModelServer, ServerConfig, running_server, serve_forever

__all__ = ["ModelServer", "ServerConfig", "running_server", "serve_forever"]
