"""Serving's wire contract for predict, as OpenAPI documents it.

The predict handlers parse bodies themselves (measured faster than per-request Pydantic
validation); these models describe the same contract for `/docs`, clients and schema-driven
fuzzing, and `tests/serving` checks that what the handlers accept and answer matches them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ERROR_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "detail": {},
    },
}
"""Every serving error's JSON body, as OpenAPI documents it (`serving.errors` writes it)."""

Scalar = float | int | str | bool | None
Output = Literal["predict", "predict_proba", "predict_log_proba", "decision_function"]


class DataframeSplit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    columns: list[str] = Field(min_length=1)
    data: list[list[Scalar]] = Field(min_length=1)
    index: list[Scalar] | None = None


class PredictRequest(BaseModel):
    """Exactly one of the input keys, plus optionally `outputs`."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[list[Scalar]] | list[dict[str, Scalar]] | dict[str, list[Scalar]] | None = Field(
        default=None,
        description="Rows, records matched to the signature's feature names, or columns.",
    )
    instances: list[list[Scalar]] | list[dict[str, Scalar]] | None = Field(
        default=None, description="KServe V1 style rows or records."
    )
    dataframe_split: DataframeSplit | None = Field(default=None, description="MLflow style.")
    dataframe_records: list[dict[str, Scalar]] | None = Field(default=None, description="MLflow.")
    input: list[Scalar] | dict[str, Scalar] | None = Field(
        default=None, description="One row or record, as in the common Flask example."
    )
    outputs: list[Output] | None = Field(
        default=None, min_length=1, description="Methods to answer with; default `predict`."
    )


class PredictResponse(BaseModel):
    """`predictions` is `predict`'s output; each other requested method answers under its name."""

    model_config = ConfigDict(extra="allow")

    model: str
    version: int
    alias: str | None = Field(default=None, description="Present when routed by alias.")
    predictions: list[Any]


def predict_openapi(routes: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """OpenAPI path items for the predict routes and the component schemas they reference.

    `routes` maps each path to a one-line summary.
    """
    components: dict[str, Any] = {}
    refs = {}
    for model in (PredictRequest, PredictResponse):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
        refs[model] = {"$ref": f"#/components/schemas/{model.__name__}"}
    error = {"$ref": "#/components/schemas/ErrorBody"}
    components["ErrorBody"] = ERROR_BODY
    paths: dict[str, Any] = {}
    for path, summary in routes.items():
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": schema}
            for name, schema in (
                ("name", {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,127}$"}),
                ("alias", {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,127}$"}),
                ("version", {"type": "integer", "minimum": 1}),
            )
            if "{" + name + "}" in path
        ]
        parameters.append(
            {
                "name": "X-Routing-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 256},
                "description": "Sticky A/B routing: the same key lands on the same variant.",
            }
        )
        paths[path] = {
            "post": {
                "tags": ["predict"],
                "summary": summary,
                "operationId": "predict_"
                + path.strip("/").replace("/", "_").replace("{", "").replace("}", ""),
                "parameters": parameters,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": refs[PredictRequest]},
                        "text/csv": {
                            "schema": {
                                "type": "string",
                                "description": "A header row naming the features, then rows "
                                "(as MLflow's scoring server takes it).",
                            }
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "Predictions; `X-Model-Version` and `X-Model-Sha256` "
                        "name the version that answered.",
                        "content": {"application/json": {"schema": refs[PredictResponse]}},
                    },
                    **{
                        code: {
                            "description": text,
                            "content": {"application/json": {"schema": error}},
                        }
                        for code, text in (
                            ("400", "Malformed body."),
                            ("404", "Unknown model, alias or version."),
                            ("413", "Body too large."),
                            ("422", "Input does not match the version's signature."),
                            ("503", "The version could not be loaded yet."),
                        )
                    },
                },
            }
        }
    return paths, components
