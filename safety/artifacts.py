"""Inspect an artifact's bytes and decide whether a flavor may load it.

`inspect_stream` / `inspect_file` find out what the bytes are (a pickle or joblib file, possibly
compressed; a skops file; another zip; other data) and what loading them would resolve, without
deserialising anything. `check` applies the flavor's rule:

- `sklearn` (and `joblib`, `pickle`): the bytes must be a pickle that passes the scan.
- `skops`: the bytes must be a skops file whose every type is trusted by skops or allow-listed.
- any other flavor, and every rendition: data that is not a pickle passes untouched, but anything
  that *is* a pickle (or a compressed stream, or a zip member that is one) must pass the scan, so
  naming an unknown flavor never smuggles a pickle past it.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO

from safety.allowlist import POLICY, is_allowed
from safety.errors import Reason, UnsafeArtifact
from safety.pickles import DEFAULT_LIMITS, Limits, PickleScanner, Policy, ScanStats
from safety.streams import CHUNK, Chunks, DecompressedChunks, FileChunks, Reader

PICKLE_FLAVORS = frozenset({"sklearn", "joblib", "pickle"})
SKOPS_FLAVORS = frozenset({"skops"})

# joblib's own detection order (`joblib.numpy_pickle_utils._detect_compressor`): first match wins.
_JOBLIB_COMPAT_PREFIX = b"ZF"
_COMPRESSION_PREFIXES = (
    ("zlib", b"\x78"),
    ("gzip", b"\x1f\x8b"),
    ("bz2", b"BZ"),
    ("lzma", b"\x5d\x00"),
    ("xz", b"\xfd\x37\x7a\x58\x5a"),
    ("lz4", b"\x04\x22\x4d\x18"),
)
_INSPECTABLE_COMPRESSION = frozenset({"zlib", "gzip", "bz2", "lzma", "xz"})
_ZIP_PREFIXES = (b"PK\x03\x04", b"PK\x05\x06")
_PROTO = 0x80
_MAX_ZIP_MEMBERS = 10_000
_MAX_ZIP_DEPTH = 2


class Kind(StrEnum):
    pickle = "pickle"
    """A pickle or joblib stream (possibly compressed): loading it runs opcodes."""
    skops = "skops"
    zip = "zip"
    data = "data"
    """Bytes no pickle loader would get far in: not a pickle, not an archive."""


@dataclass(frozen=True)
class Inspection:
    """What an artifact is, what loading it would resolve, and what (if anything) is wrong."""

    kind: Kind
    size: int
    compression: str | None = None
    globals: frozenset[str] = frozenset()
    problem: UnsafeArtifact | None = None
    untrusted_types: tuple[str, ...] = ()
    """Types a skops file names that skops does not trust by default (all allow-listed)."""
    stats: ScanStats = field(default_factory=ScanStats, compare=False)

    @property
    def detected_flavor(self) -> str | None:
        """The flavor these bytes are, when the uploader did not say."""
        if self.kind is Kind.skops:
            return "skops"
        if self.kind is Kind.pickle:
            return "sklearn"
        return None


def check(inspection: Inspection, flavor: str, *, primary: bool = True) -> None:
    """Raise `UnsafeArtifact` unless loading these bytes as `flavor` is allowed."""
    if primary and flavor in PICKLE_FLAVORS:
        if inspection.kind is not Kind.pickle and inspection.problem is None:
            raise UnsafeArtifact(
                f"flavor '{flavor}' needs a joblib or pickle file; this is {inspection.kind}",
                reason=Reason.wrong_format,
            )
        if inspection.problem is not None:
            raise inspection.problem
    elif primary and flavor in SKOPS_FLAVORS:
        if inspection.kind is not Kind.skops:
            raise UnsafeArtifact(
                f"flavor '{flavor}' needs a .skops file; this is {inspection.kind}",
                reason=Reason.wrong_format,
            )
        if inspection.problem is not None:
            raise inspection.problem
    elif inspection.problem is not None and inspection.kind is not Kind.data:
        raise inspection.problem


# --- inspection -----------------------------------------------------------------------------


def inspect_file(
    path: Path, *, limits: Limits = DEFAULT_LIMITS, policy: Policy = POLICY
) -> Inspection:
    """Inspect a file on disk (zip archives are read in place)."""
    with path.open("rb") as handle:
        return _inspect(
            Reader(FileChunks(handle), max_line=limits.max_line_bytes),
            path=path,
            limits=limits,
            policy=policy,
            spool_dir=None,
            depth=0,
        )


def inspect_stream(
    chunks: Chunks,
    *,
    limits: Limits = DEFAULT_LIMITS,
    policy: Policy = POLICY,
    spool_dir: Path | None = None,
) -> Inspection:
    """Inspect a stream in one pass; a zip archive is spooled to a temporary file first."""
    return _inspect(
        Reader(chunks, max_line=limits.max_line_bytes),
        path=None,
        limits=limits,
        policy=policy,
        spool_dir=spool_dir,
        depth=0,
    )


def _inspect(
    reader: Reader,
    *,
    path: Path | None,
    limits: Limits,
    policy: Policy,
    spool_dir: Path | None,
    depth: int,
) -> Inspection:
    head = reader.peek(8)
    if head.startswith(_ZIP_PREFIXES):
        if path is not None:
            reader.drain()
            return _inspect_zip(path, limits=limits, policy=policy, depth=depth)
        with _spooled(reader, spool_dir) as spooled:
            return _inspect_zip(spooled, limits=limits, policy=policy, depth=depth)
    if head.startswith(_JOBLIB_COMPAT_PREFIX):
        size = reader.offset + reader.drain()
        return Inspection(
            Kind.pickle,
            size,
            compression="joblib<0.10",
            problem=UnsafeArtifact(
                "a joblib file older than 0.10, which reads arrays from companion files",
                reason=Reason.uninspectable,
            ),
        )
    for name, prefix in _COMPRESSION_PREFIXES:
        if head.startswith(prefix):
            return _inspect_compressed(reader, name, limits=limits, policy=policy)
    return _inspect_pickle(reader, limits=limits, policy=policy)


def _scan_pickle(
    reader: Reader, *, limits: Limits, policy: Policy
) -> tuple[Kind, UnsafeArtifact | None, ScanStats]:
    """Scan a (decompressed) stream as one joblib pickle followed by nothing."""
    stats = ScanStats()
    first = reader.peek(1)
    try:
        PickleScanner(reader, policy=policy, joblib=True, limits=limits, stats=stats).run()
        if not reader.at_end():
            raise UnsafeArtifact(
                "there are bytes after the end of the pickle",
                reason=Reason.unsafe_construct,
                offset=reader.offset,
            )
    except UnsafeArtifact as exc:
        # A stream that stops parsing before anything happened and never announced a pickle
        # protocol is data (ONNX, text, weights), not a broken pickle.
        looks_like_data = exc.reason is Reason.malformed and not first.startswith(bytes([_PROTO]))
        return (Kind.data if looks_like_data else Kind.pickle), exc, stats
    return Kind.pickle, None, stats


def _inspect_pickle(reader: Reader, *, limits: Limits, policy: Policy) -> Inspection:
    kind, problem, stats = _scan_pickle(reader, limits=limits, policy=policy)
    size = reader.offset + reader.drain()
    return Inspection(kind, size, globals=frozenset(stats.globals), problem=problem, stats=stats)


def _inspect_compressed(
    reader: Reader, compression: str, *, limits: Limits, policy: Policy
) -> Inspection:
    if compression not in _INSPECTABLE_COMPRESSION:
        size = reader.offset + reader.drain()
        return Inspection(
            Kind.pickle,
            size,
            compression=compression,
            problem=UnsafeArtifact(
                f"{compression}-compressed: the scanner cannot look inside it",
                reason=Reason.uninspectable,
            ),
        )
    inner = Reader(
        DecompressedChunks(reader, compression, limit=limits.max_expanded_bytes),
        max_line=limits.max_line_bytes,
    )
    try:
        kind, problem, stats = _scan_pickle(inner, limits=limits, policy=policy)
    except UnsafeArtifact as exc:
        # The decompressor itself failed: a corrupt stream, trailing bytes, a bomb.
        kind, problem, stats = Kind.pickle, exc, ScanStats()
    size = reader.offset + reader.drain()
    # Compressed bytes that decompress to data stay data; anything else is a pickle, checked.
    return Inspection(
        kind,
        size,
        compression=compression,
        globals=frozenset(stats.globals),
        problem=problem,
        stats=stats,
    )


@contextmanager
def _spooled(reader: Reader, spool_dir: Path | None) -> Iterator[Path]:
    """Copy the rest of the stream to a private temporary file (a zip needs random access)."""
    fd, name = tempfile.mkstemp(prefix="berth-inspect-", suffix=".zip", dir=spool_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := reader.read(CHUNK):
                out.write(chunk)
        yield path
    finally:
        path.unlink(missing_ok=True)


def _inspect_zip(path: Path, *, limits: Limits, policy: Policy, depth: int) -> Inspection:
    size = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return Inspection(
            Kind.data,
            size,
            problem=UnsafeArtifact(f"not a readable zip archive: {exc}", reason=Reason.malformed),
        )
    with archive:
        try:
            problem, found = _scan_members(archive, limits=limits, policy=policy, depth=depth)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            problem, found = (
                UnsafeArtifact(f"a zip member cannot be read: {exc}", reason=Reason.malformed),
                frozenset(),
            )
        names = set(archive.namelist())
    if "schema.json" not in names:
        return Inspection(Kind.zip, size, globals=found, problem=problem)
    untrusted, skops_problem = _skops_untrusted(path)
    return Inspection(
        Kind.skops,
        size,
        globals=found,
        problem=problem or skops_problem,
        untrusted_types=untrusted,
    )


def _scan_members(
    archive: zipfile.ZipFile, *, limits: Limits, policy: Policy, depth: int
) -> tuple[UnsafeArtifact | None, frozenset[str]]:
    """Every member that is a pickle (or compressed, or a zip holding one) must pass the scan."""
    members = archive.infolist()
    if len(members) > _MAX_ZIP_MEMBERS:
        return UnsafeArtifact(
            f"a zip archive of more than {_MAX_ZIP_MEMBERS} members", reason=Reason.limit
        ), frozenset()
    expanded = 0
    found: set[str] = set()
    for member in members:
        if member.is_dir():
            continue
        expanded += member.file_size
        if expanded > limits.max_expanded_bytes:
            return UnsafeArtifact(
                f"the zip archive expands to more than {limits.max_expanded_bytes} bytes",
                reason=Reason.limit,
            ), frozenset(found)
        with archive.open(member) as handle:
            result = _inspect_member(handle, limits=limits, policy=policy, depth=depth + 1)
        found |= result.globals
        if result.problem is not None and result.kind is not Kind.data:
            problem = result.problem
            return UnsafeArtifact(
                f"zip member {member.filename[:200]!r}: {problem.message}",
                reason=problem.reason,
                global_name=problem.global_name,
            ), frozenset(found)
    return None, frozenset(found)


def _inspect_member(handle: IO[bytes], *, limits: Limits, policy: Policy, depth: int) -> Inspection:
    reader = Reader(FileChunks(handle), max_line=limits.max_line_bytes)
    if reader.peek(4).startswith(_ZIP_PREFIXES):
        if depth >= _MAX_ZIP_DEPTH:
            return Inspection(
                Kind.zip,
                0,
                problem=UnsafeArtifact("zip archives nested too deep", reason=Reason.limit),
            )
        with _spooled(reader, None) as spooled:
            return _inspect_zip(spooled, limits=limits, policy=policy, depth=depth)
    return _inspect(reader, path=None, limits=limits, policy=policy, spool_dir=None, depth=depth)


def _skops_untrusted(path: Path) -> tuple[tuple[str, ...], UnsafeArtifact | None]:
    """skops's own trusted-types check, with the allow-list as the only extension of it."""
    from skops.io import get_untrusted_types

    try:
        untrusted = tuple(get_untrusted_types(file=path))
    except Exception as exc:  # skops raises a variety of errors on malformed files
        return (), UnsafeArtifact(
            f"not a readable skops file: {type(exc).__name__}: {exc}", reason=Reason.wrong_format
        )
    for type_name in untrusted:
        module, _, name = type_name.rpartition(".")
        if not is_allowed(module, name):
            return untrusted, UnsafeArtifact(
                f"the skops file names {type_name}, which is not on the allow-list",
                reason=Reason.untrusted_type,
                global_name=type_name,
            )
    return untrusted, None
