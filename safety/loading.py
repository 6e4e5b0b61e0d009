"""Load an artifact that passed inspection, with the allow-list enforced a second time.

The scanner decides before anything runs; the loader then resolves globals through a
`find_class` that applies the same allow-list, so even a stream the scanner misread (a parser
differential) cannot make the loader import anything else. Callers still verify the digest first
and should load where a hostile artifact can do least harm (see `serving.isolation`).
"""

from __future__ import annotations

import _compat_pickle
import pickle
from pathlib import Path
from typing import Any

from safety.allowlist import is_allowed
from safety.artifacts import PICKLE_FLAVORS, SKOPS_FLAVORS, Inspection, check, inspect_file
from safety.errors import Reason, UnsafeArtifact


def load_artifact(path: Path, flavor: str) -> tuple[Any, Inspection]:
    """Inspect, check and deserialise `path` as `flavor`; raises `UnsafeArtifact` when refused."""
    inspection = inspect_file(path)
    check(inspection, flavor)
    if flavor in PICKLE_FLAVORS:
        return load_joblib(path), inspection
    if flavor in SKOPS_FLAVORS:
        return load_skops(path, inspection), inspection
    raise UnsafeArtifact(f"no loader for flavor '{flavor}'", reason=Reason.wrong_format)


def load_joblib(path: Path) -> Any:
    """`joblib.load`, but every global goes through the allow-list."""
    from joblib.numpy_pickle import NumpyUnpickler
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    class AllowListUnpickler(NumpyUnpickler):  # type: ignore[misc]
        def find_class(self, module: str, name: str) -> Any:
            mapped_module, mapped_name = module, name
            if self.proto < 3 and self.fix_imports:
                if (module, name) in _compat_pickle.NAME_MAPPING:
                    mapped_module, mapped_name = _compat_pickle.NAME_MAPPING[(module, name)]
                elif module in _compat_pickle.IMPORT_MAPPING:
                    mapped_module = _compat_pickle.IMPORT_MAPPING[module]
            if not is_allowed(mapped_module, mapped_name):
                raise pickle.UnpicklingError(
                    f"{mapped_module}.{mapped_name} is not on the allow-list"
                )
            return super().find_class(module, name)

        def persistent_load(self, pid: Any) -> Any:
            raise pickle.UnpicklingError("persistent ids are not allowed")

    with (
        path.open("rb") as handle,
        _validate_fileobject_and_memmap(handle, str(path), None) as (stream, _),
    ):
        if isinstance(stream, str):
            raise UnsafeArtifact(
                "a joblib file older than 0.10 (companion files)", reason=Reason.uninspectable
            )
        unpickler = AllowListUnpickler(str(path), stream, ensure_native_byte_order=True)
        try:
            return unpickler.load()
        except pickle.UnpicklingError as exc:
            if "allow-list" in str(exc):
                raise UnsafeArtifact(
                    f"the loader refused a global: {exc}", reason=Reason.disallowed_global
                ) from exc
            raise


def load_skops(path: Path, inspection: Inspection) -> Any:
    """`skops.io.load`, trusting only the types the inspection found allow-listed."""
    from skops.io import load

    return load(path, trusted=list(inspection.untrusted_types))
