"""The protocols' wire contracts, as OpenAPI documents them.

The metadata and health routes are FastAPI routes and use these models directly. The inference
routes are plain Starlette routes that parse their own bodies (binary tensor data included), so
`protocols_openapi` writes their path items from the same models; `tests/serving` checks the
documented shapes against what the handlers accept and answer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.schemas import PredictRequest

Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
Output = Literal["predict", "predict_proba", "predict_log_proba", "decision_function"]


# --- Open Inference Protocol (V2) ------------------------------------------------------------


class OipError(BaseModel):
    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class LiveOut(BaseModel):
    live: bool


class ReadyOut(BaseModel):
    ready: bool


class ModelReadyOut(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="The versions this answer describes.")
    platform: str = Field(description="The flavor the version was stored as, e.g. `sklearn`.")
    inputs: list[TensorMetadata] = Field(
        description="One tensor per feature of the signature. A single [rows, features] tensor "
        "in signature order is accepted too."
    )
    outputs: list[TensorMetadata] = Field(description="The estimator methods the version offers.")
    parameters: dict[str, str] = Field(
        default_factory=dict,
        description="`alias` when resolved through one, and the `version` described.",
    )


class TensorParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    binary_data_size: int | None = Field(
        default=None,
        ge=0,
        description="Binary tensor data extension: the tensor's bytes follow the JSON header.",
    )


class RequestInput(BaseModel):
    name: str = Field(description="A feature of the signature, or any name for one matrix.")
    shape: list[int]
    datatype: Datatype
    parameters: TensorParameters | None = None
    data: list[Any] | None = Field(
        default=None, description="Row-major, nested or flat; absent when sent as binary."
    )


class OutputParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    binary_data: bool | None = Field(default=None, description="Answer this output as binary.")


class RequestOutput(BaseModel):
    name: Output
    parameters: OutputParameters | None = None


class InferenceRequest(BaseModel):
    id: str | None = Field(default=None, description="Echoed in the answer.")
    parameters: dict[str, Any] | None = Field(
        default=None, description="`binary_data_output: true` answers every output as binary."
    )
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(
        default=None, description="Default: `predict` only."
    )


class ResponseOutput(BaseModel):
    name: Output
    shape: list[int]
    datatype: Datatype
    parameters: TensorParameters | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str = Field(description="The version that answered, always present.")
    id: str | None = None
    outputs: list[ResponseOutput]


# --- KServe V1 and MLflow --------------------------------------------------------------------


class V1Error(BaseModel):
    error: str


class ModelsOut(BaseModel):
    models: list[str]


class PredictionsResponse(BaseModel):
    """`predictions` is `predict`'s output; any other method asked for answers under its name."""

    model_config = ConfigDict(extra="allow")

    predictions: list[Any]


class MlflowError(BaseModel):
    error_code: str = Field(description="MLflow's code, e.g. `BAD_REQUEST`.")
    message: str


# --- OpenAPI of the plain inference routes ----------------------------------------------------


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _errors(model: type[BaseModel], codes: dict[str, str]) -> dict[str, Any]:
    return {
        code: {"description": text, "content": {"application/json": {"schema": _ref(model)}}}
        for code, text in codes.items()
    }


_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,127}$"},
}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_ROUTING_KEY = {
    "name": "X-Routing-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 256},
    "description": "Sticky A/B routing: the same key lands on the same variant.",
}
_HEADER_LENGTH = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "Binary tensor data extension: the length of the JSON header; the inputs' "
    "bytes follow it.",
}


_AUTH = {
    "401": "No bearer token, or one not vouched for.",
    "403": "The token may not call this model.",
}
_FAILURES = {
    "500": "The model failed on accepted input.",
    "502": "The registry refused serving.",
    "503": "No version loaded yet, or the registry is unreachable.",
}


def protocols_openapi() -> tuple[dict[str, Any], dict[str, Any]]:
    """OpenAPI path items for the protocols' inference routes and the schemas they reference."""
    components: dict[str, Any] = {}
    for model in (
        InferenceRequest,
        InferenceResponse,
        OipError,
        PredictionsResponse,
        V1Error,
        MlflowError,
    ):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    oip_errors = _errors(
        OipError,
        {
            "400": "A tensor contradicts itself (shape, datatype, data, binary sizes).",
            **_AUTH,
            "404": "Unknown model, alias or version.",
            "413": "Body too large (or too large once decompressed).",
            "422": "The tensors do not fit the version's signature.",
            **_FAILURES,
        },
    )

    def infer(summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "post": {
                "tags": ["open inference protocol (v2)"],
                "summary": summary,
                "parameters": [*parameters, _HEADER_LENGTH],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref(InferenceRequest)},
                        "application/octet-stream": {
                            "schema": {
                                "type": "string",
                                "format": "binary",
                                "description": "The JSON header, then the binary tensor data.",
                            }
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "Outputs; as `application/octet-stream` with an "
                        "`Inference-Header-Content-Length` header when any is binary.",
                        "content": {
                            "application/json": {"schema": _ref(InferenceResponse)},
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                        },
                    },
                    **oip_errors,
                },
            }
        }

    def predictions(
        tag: str, summary: str, parameters: list[dict[str, Any]], error: type[BaseModel]
    ) -> dict[str, Any]:
        content: dict[str, Any] = {"application/json": {"schema": _ref(PredictRequest)}}
        if tag == "mlflow scoring":
            content["text/csv"] = {
                "schema": {
                    "type": "string",
                    "description": "A header row naming the features, then rows.",
                }
            }
        return {
            "post": {
                "tags": [tag],
                "summary": summary,
                "parameters": parameters,
                "requestBody": {"required": True, "content": content},
                "responses": {
                    "200": {
                        "description": "Predictions; `X-Model-Version` names the version.",
                        "content": {"application/json": {"schema": _ref(PredictionsResponse)}},
                    },
                    **_errors(
                        error,
                        {
                            "400": "Malformed body.",
                            **_AUTH,
                            "404": "Unknown model or no default alias.",
                            "413": "Body too large.",
                            "422": "Input does not match the version's signature.",
                            **_FAILURES,
                        },
                    ),
                },
            }
        }

    paths = {
        "/v2/models/{name}/infer": infer(
            "Infer through the default alias (A/B split and X-Routing-Key included).",
            [_NAME, _ROUTING_KEY],
        ),
        "/v2/models/{name}/versions/{version}/infer": infer(
            "Infer with a pinned version (loaded on first use).", [_NAME, _VERSION]
        ),
        "/v1/models/{name}:predict": predictions(
            "kserve v1",
            "KServe V1 predict: `instances` in, `predictions` out, through the default alias.",
            [_NAME, _ROUTING_KEY],
            V1Error,
        ),
        "/invocations": predictions(
            "mlflow scoring",
            "MLflow scoring of the model named by BERTH_DEFAULT_MODEL (JSON or text/csv).",
            [_ROUTING_KEY],
            MlflowError,
        ),
        "/models/{name}/invocations": predictions(
            "mlflow scoring",
            "MLflow scoring of any model through its default alias (JSON or text/csv).",
            [_NAME, _ROUTING_KEY],
            MlflowError,
        ),
    }
    return paths, components
