"""Upload-time safety checks: no artifact is registered that serving would refuse to load.

Each file part of an upload is inspected by `safety` while it streams into the store (see
`uploads._Part.write`), so nothing is read back from S3 and nothing is held in memory. Once the
body has ended and the metadata part is known, `check_upload` applies the flavor's rule to every
part; a refusal is a 422 `unsafe_artifact` naming the global, and the upload's temporary objects
are discarded by the caller as for any other failure. This check is the tripwire; the boundary is
that only publishers upload and serving checks again, on bytes whose digest it verified, before
it loads anything.
"""

from __future__ import annotations

from registry.errors import UnsafeArtifact
from registry.schemas import PRIMARY_FILE
from registry.uploads import ReceivedUpload
from safety import BackgroundInspection
from safety import UnsafeArtifact as Refused
from safety import check as check_inspection


def start_inspection() -> BackgroundInspection:
    """A fresh inspection for one file part; `UploadReceiver` feeds it."""
    return BackgroundInspection()


def check_upload(received: ReceivedUpload) -> None:
    """Raise `UnsafeArtifact` (422) unless every file may be loaded. Blocking: a worker thread.

    When the uploader named no flavor, a skops primary artifact gets `skops` (the default,
    `sklearn`, would refuse it): the bytes, not the file name, decide.
    """
    inspections = {
        part.name: part.inspection.result() for part in received.files if part.inspection
    }
    metadata = received.metadata
    primary = inspections.get(PRIMARY_FILE)
    if primary is not None and "flavor" not in metadata.model_fields_set:
        detected = primary.detected_flavor
        if detected is not None and detected != metadata.flavor:
            received.metadata = metadata = metadata.model_copy(update={"flavor": detected})
    for name, inspection in sorted(inspections.items(), key=lambda item: item[0] != PRIMARY_FILE):
        try:
            check_inspection(inspection, metadata.flavor, primary=name == PRIMARY_FILE)
        except Refused as exc:
            raise UnsafeArtifact(
                f"file '{name}' is not safe to load as flavor '{metadata.flavor}': {exc.message}",
                detail={"file": name, "flavor": metadata.flavor, **exc.detail()},
            ) from exc
