"""ONNX Runtime's introspection of a session, answered from the model facts: ``NodeArg``,
``ModelMetadata``, and ``get_inputs`` / ``get_outputs`` / ``get_modelmeta`` (a mixin of
:class:`~autoinfer.session.Session`), the same whichever runtime runs the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .model import ModelFacts


@dataclass(frozen=True)
class NodeArg:
    """Like ``onnxruntime.NodeArg``: name, shape (ints, symbolic names or None) and type."""

    name: str
    shape: list[Any] | None
    type: str


@dataclass(frozen=True)
class ModelMetadata:
    """Like ``onnxruntime.ModelMetadata``."""

    producer_name: str
    graph_name: str
    domain: str
    description: str
    graph_description: str
    version: int
    custom_metadata_map: dict[str, str]


class Introspection:
    """The introspection of a session whose model facts are ``_facts``."""

    _facts: ModelFacts

    def get_inputs(self) -> list[NodeArg]:
        # an unknown rank reads [] as in ONNX Runtime
        return [NodeArg(i.name, list(i.shape or ()), i.ort_type) for i in self._facts.inputs]

    def get_outputs(self) -> list[NodeArg]:
        return [NodeArg(o.name, list(o.shape or ()), o.ort_type) for o in self._facts.outputs]

    def get_modelmeta(self) -> ModelMetadata:
        f = self._facts
        return ModelMetadata(
            producer_name=f.producer_name,
            graph_name=f.graph_name,
            domain=f.domain,
            description=f.description,
            graph_description=f.graph_description,
            version=f.model_version,
            custom_metadata_map=dict(f.metadata),
        )
