"""A pull parser over pickle opcodes that decides, without executing anything, whether loading
the stream with joblib could resolve a global outside the allow-list.

It mirrors `pickle._Unpickler` (the implementation joblib loads with) opcode by opcode: the same
framing rules, the same Python 2 name mapping, the same argument parsing. Values are tracked only
as far as a decision needs them: short literals, containers of a few items, references to globals
and to the objects built from them. joblib's format is followed too: after the BUILD of a
`NumpyArrayWrapper` joblib reads the array's raw bytes straight from the file, or a nested pickle
for object arrays, so the scanner computes the exact byte count from the wrapper's state (and the
dtype it denotes) and skips them, or scans the nested pickle recursively.

Anything the scanner cannot follow is a rejection, never a pass: a call of a computed value,
persistent ids, the copyreg extension registry, out-of-band buffers, a dtype it cannot pin down.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from struct import unpack
from typing import Any, NoReturn

from safety.errors import Reason, UnsafeArtifact
from safety.streams import Reader

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that keep a hostile stream from exhausting the scanner (or, later, the loader)."""

    max_memo: int = 4_000_000
    max_stack: int = 1_000_000
    max_marks: int = 100_000
    max_frame_bytes: int = 16 * MiB
    max_line_bytes: int = 16 * MiB
    max_nesting: int = 8
    max_array_bytes: int = 1 << 40
    max_expanded_bytes: int = 1 << 35
    """How far a compressed artifact may expand (32 GiB): past it, a decompression bomb. Also
    bounds the CPU a hostile upload can make the registry spend decompressing."""


DEFAULT_LIMITS = Limits()

# Literals longer than this are not kept (only their presence): no decision needs them.
_KEEP_BYTES = 1024
# Containers keep at most this many items; the rest are counted, not kept.
_KEEP_ITEMS = 256

NUMPY_DTYPE = ("numpy", "dtype")
JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
_WRAPPER_INIT = (
    "subclass",
    "shape",
    "order",
    "dtype",
    "allow_mmap",
    "numpy_array_alignment_bytes",
)
_WRAPPER_DEFAULTS = {"allow_mmap": False, "numpy_array_alignment_bytes": 16}


class _Opaque:
    """A value the scanner does not track (a long literal, a loaded array, ...)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<opaque>"


OPAQUE: Any = _Opaque()


@dataclass(eq=False, slots=True)
class Global:
    """A global the stream resolved, already checked against the allow-list."""

    module: str
    name: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.module, self.name)

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"


_UNSET: Any = object()


@dataclass(eq=False, slots=True)
class Instance:
    """An object built by calling or instantiating an allowed global."""

    cls: Global
    args: tuple[Any, ...] | None = None
    """Positional arguments of a call (REDUCE, INST, OBJ); None when built by `__new__`."""
    state: Any = _UNSET
    builds: int = 0
    described: tuple[int, bool] | None = None
    """(itemsize, hasobject) of a `numpy.dtype`, fixed when its state is set."""
    numpy_dtype: Any = None
    """The numpy dtype this denotes, once `safety.dtypes` has pinned it down."""
    attrs: dict[str, Any] | None = None
    """Instance attributes, for the joblib array wrapper only (what joblib reads from)."""


class _List(list[Any]):
    __slots__ = ("dropped",)

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def add(self, item: Any) -> None:
        if len(self) < _KEEP_ITEMS:
            self.append(item)
        else:
            self.dropped += 1


class _Dict(dict[Any, Any]):
    __slots__ = ("dropped",)

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def put(self, key: Any, value: Any) -> None:
        if isinstance(key, (list, dict, set, _Set)):
            # The unpickler fails on an unhashable key; so do we.
            raise TypeError("unhashable key")
        if key is OPAQUE or (len(self) >= _KEEP_ITEMS and key not in self):
            self.dropped += 1
            return
        self[key] = value


class _Set(set[Any]):
    __slots__ = ()


ArgumentRule = Callable[[tuple[Any, ...]], str | None]
"""Checks a call's arguments; returns why they are refused, or None."""


@dataclass(frozen=True)
class Policy:
    """What a pickle may resolve and call."""

    allowed: Callable[[str, str], bool]
    """Whether (module, name) may be resolved."""
    argument_rules: dict[tuple[str, str], ArgumentRule] = field(default_factory=dict)
    """Helpers admitted only with particular arguments."""
    instantiates_first_argument: frozenset[tuple[str, str]] = frozenset(
        {("copyreg", "_reconstructor"), ("copyreg", "__newobj__")}
    )
    """Calls that return a new instance of the class passed first (tracked as that class)."""


PERMISSIVE = Policy(allowed=lambda module, name: True)
"""Resolves anything: for surveys of honest models, never for loading."""


@dataclass
class ScanStats:
    globals: set[str] = field(default_factory=set)
    opcodes: int = 0
    arrays: int = 0
    array_bytes: int = 0
    nested: int = 0
    protocol: int = 0


def _is_builtin_type(value: Any) -> bool:
    return isinstance(value, Global) and value.module == "builtins"


class PickleScanner:
    """Scans one pickle (to its STOP) from `reader`; raises `UnsafeArtifact` or returns.

    `joblib=True` follows joblib's inline arrays after each `NumpyArrayWrapper` BUILD, as
    `joblib.numpy_pickle.NumpyUnpickler` does; nested pickles of object arrays are scanned with
    `joblib=False`, as joblib reads them with a plain unpickler.
    """

    def __init__(
        self,
        reader: Reader,
        *,
        policy: Policy,
        joblib: bool,
        limits: Limits = DEFAULT_LIMITS,
        depth: int = 0,
        stats: ScanStats | None = None,
        import_protocol: Callable[[], int] | None = None,
        describe_dtype: Callable[[Instance], tuple[int, bool]] | None = None,
    ) -> None:
        self._reader = reader
        self._policy = policy
        self._allowed = policy.allowed
        self._rules = policy.argument_rules
        self._joblib = joblib
        self._limits = limits
        self._depth = depth
        self.stats = stats if stats is not None else ScanStats()
        self.proto = 0
        # joblib's nested unpickler borrows the outer one's find_class, so Python 2 name mapping
        # follows the *outer* stream's protocol there.
        self._import_protocol = import_protocol or (lambda: self.proto)
        if describe_dtype is None:
            from safety.dtypes import describe

            describe_dtype = describe
        self._describe_dtype = describe_dtype
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self._frame: bytes | None = None
        self._frame_pos = 0
        self._frame_start = 0
        self._opcode_offset = 0
        self._dispatch = self._build_dispatch()

    # --- errors ---------------------------------------------------------------------------

    def _fail(self, reason: Reason, message: str, *, global_name: str | None = None) -> NoReturn:
        raise UnsafeArtifact(
            message, reason=reason, global_name=global_name, offset=self._opcode_offset
        )

    def _malformed(self, message: str) -> NoReturn:
        self._fail(Reason.malformed, f"not a loadable pickle: {message}")

    def _unsafe(self, message: str) -> NoReturn:
        self._fail(Reason.unsafe_construct, message)

    # --- input, with the framing rules of pickle._Unframer ---------------------------------

    def _read(self, n: int) -> bytes:
        if self._frame is not None:
            data = self._frame[self._frame_pos : self._frame_pos + n]
            if not data and n != 0:
                self._frame = None
                return self._read_exact(n)
            if len(data) < n:
                self._malformed("pickle exhausted before end of frame")
            self._frame_pos += n
            return data
        return self._read_exact(n)

    def _read_exact(self, n: int) -> bytes:
        data = self._reader.read(n)
        if len(data) < n:
            self._malformed("the stream ends inside an opcode")
        return data

    def _take(self, n: int) -> bytes | None:
        """Consume an n-byte literal; returns it only when short enough to keep."""
        if self._frame is not None:
            if self._frame_pos < len(self._frame) or n == 0:
                data = self._read(n)  # never more than the frame holds
                return data if n <= _KEEP_BYTES else None
            self._frame = None
        if n <= _KEEP_BYTES:
            return self._read_exact(n)
        if self._reader.skip(n) < n:
            self._malformed("the stream ends inside a literal")
        return None

    def _readline(self) -> bytes:
        if self._frame is not None:
            end = self._frame.find(b"\n", self._frame_pos)
            stop = end + 1 if end >= 0 else len(self._frame)
            data = self._frame[self._frame_pos : stop]
            if not data:
                self._frame = None
                return self._reader.readline()
            self._frame_pos = stop
            if data[-1] != 10:
                self._malformed("pickle exhausted before end of frame")
            return data
        return self._reader.readline()

    # --- the stack ------------------------------------------------------------------------

    def _push(self, value: Any) -> None:
        if len(self.stack) >= self._limits.max_stack:
            self._fail(Reason.limit, f"more than {self._limits.max_stack} values on the stack")
        self.stack.append(value)

    def _pop(self) -> Any:
        if not self.stack:
            self._malformed("stack underflow")
        return self.stack.pop()

    def _top(self) -> Any:
        if not self.stack:
            self._malformed("stack underflow")
        return self.stack[-1]

    def _pop_mark(self) -> list[Any]:
        if not self.metastack:
            self._malformed("no MARK on the stack")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    # --- the walk -------------------------------------------------------------------------

    def run(self) -> Any:
        """Scan to the pickle's STOP; returns the value it would produce (as tracked)."""
        dispatch = self._dispatch
        stats = self.stats
        while True:
            self._opcode_offset = (
                self._frame_start + self._frame_pos
                if self._frame is not None
                else self._reader.offset
            )
            code = self._read_opcode()
            handler = dispatch.get(code)
            if handler is None:
                self._malformed(f"unknown opcode 0x{code:02x}")
            stats.opcodes += 1
            if handler() is True:
                return self._stopped

    def _read_opcode(self) -> int:
        if self._frame is not None:
            if self._frame_pos < len(self._frame):
                code = self._frame[self._frame_pos]
                self._frame_pos += 1
                return code
            self._frame = None
        data = self._reader.read(1)
        if not data:
            self._malformed("the stream ends before STOP")
        return data[0]

    def _build_dispatch(self) -> dict[int, Callable[[], bool | None]]:
        table: dict[bytes, Callable[[], bool | None]] = {
            pickle.MARK: self._mark,
            pickle.STOP: self._stop,
            pickle.POP: self._pop_op,
            pickle.POP_MARK: self._pop_mark_op,
            pickle.DUP: self._dup,
            pickle.FLOAT: self._float,
            pickle.INT: self._int,
            pickle.BININT: lambda: self._push(unpack("<i", self._read(4))[0]),
            pickle.BININT1: lambda: self._push(self._read(1)[0]),
            pickle.LONG: self._long,
            pickle.BININT2: lambda: self._push(unpack("<H", self._read(2))[0]),
            pickle.NONE: lambda: self._push(None),
            pickle.PERSID: self._persid,
            pickle.BINPERSID: self._persid,
            pickle.REDUCE: self._reduce,
            pickle.STRING: self._string,
            pickle.BINSTRING: self._binstring,
            pickle.SHORT_BINSTRING: self._short_binstring,
            pickle.UNICODE: self._unicode,
            pickle.BINUNICODE: lambda: self._binunicode(unpack("<I", self._read(4))[0]),
            pickle.BINUNICODE8: lambda: self._binunicode(unpack("<Q", self._read(8))[0]),
            pickle.SHORT_BINUNICODE: lambda: self._binunicode(self._read(1)[0]),
            pickle.APPEND: self._append,
            pickle.BUILD: self._build,
            pickle.GLOBAL: self._global,
            pickle.DICT: self._dict,
            pickle.EMPTY_DICT: lambda: self._push(_Dict()),
            pickle.APPENDS: self._appends,
            pickle.GET: self._get_text,
            pickle.BINGET: lambda: self._get(self._read(1)[0]),
            pickle.LONG_BINGET: lambda: self._get(unpack("<I", self._read(4))[0]),
            pickle.INST: self._inst,
            pickle.LIST: self._list,
            pickle.EMPTY_LIST: lambda: self._push(_List()),
            pickle.OBJ: self._obj,
            pickle.PUT: self._put_text,
            pickle.BINPUT: lambda: self._put(self._read(1)[0]),
            pickle.LONG_BINPUT: lambda: self._put(unpack("<I", self._read(4))[0]),
            pickle.SETITEM: self._setitem,
            pickle.TUPLE: lambda: self._push(self._tuple(self._pop_mark())),
            pickle.EMPTY_TUPLE: lambda: self._push(()),
            pickle.SETITEMS: self._setitems,
            pickle.BINFLOAT: lambda: self._push(unpack(">d", self._read(8))[0]),
            pickle.PROTO: self._proto,
            pickle.NEWOBJ: self._newobj,
            pickle.EXT1: self._ext,
            pickle.EXT2: self._ext,
            pickle.EXT4: self._ext,
            pickle.TUPLE1: lambda: self._push((self._pop(),)),
            pickle.TUPLE2: self._tuple2,
            pickle.TUPLE3: self._tuple3,
            pickle.NEWTRUE: lambda: self._push(True),
            pickle.NEWFALSE: lambda: self._push(False),
            pickle.LONG1: lambda: self._binlong(self._read(1)[0]),
            pickle.LONG4: self._long4,
            pickle.BINBYTES: lambda: self._bytes(unpack("<I", self._read(4))[0]),
            pickle.SHORT_BINBYTES: lambda: self._bytes(self._read(1)[0]),
            pickle.BINBYTES8: lambda: self._bytes(unpack("<Q", self._read(8))[0]),
            pickle.EMPTY_SET: lambda: self._push(_Set()),
            pickle.ADDITEMS: self._additems,
            pickle.FROZENSET: self._frozenset,
            pickle.NEWOBJ_EX: self._newobj_ex,
            pickle.STACK_GLOBAL: self._stack_global,
            pickle.MEMOIZE: self._memoize,
            pickle.FRAME: self._load_frame,
            pickle.BYTEARRAY8: self._bytearray8,
            pickle.NEXT_BUFFER: self._next_buffer,
            pickle.READONLY_BUFFER: self._readonly_buffer,
        }
        return {opcode[0]: handler for opcode, handler in table.items()}

    # --- structure ------------------------------------------------------------------------

    def _mark(self) -> None:
        if len(self.metastack) >= self._limits.max_marks:
            self._fail(Reason.limit, f"more than {self._limits.max_marks} nested MARKs")
        self.metastack.append(self.stack)
        self.stack = []

    _stopped: Any = None

    def _stop(self) -> bool:
        self._stopped = self._pop()
        return True

    def _pop_op(self) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()

    def _pop_mark_op(self) -> None:
        self._pop_mark()

    def _dup(self) -> None:
        self._push(self._top())

    def _proto(self) -> None:
        proto = self._read(1)[0]
        if not 0 <= proto <= pickle.HIGHEST_PROTOCOL:
            self._malformed(f"unsupported pickle protocol {proto}")
        self.proto = proto
        self.stats.protocol = max(self.stats.protocol, proto)

    def _load_frame(self) -> None:
        (size,) = unpack("<Q", self._read(8))
        if size > sys.maxsize:
            self._malformed("frame size exceeds sys.maxsize")
        if size > self._limits.max_frame_bytes:
            self._fail(Reason.limit, f"a frame of {size} bytes")
        if self._frame is not None and self._frame_pos < len(self._frame):
            self._malformed("beginning of a new frame before end of current frame")
        # Like the unpickler: a frame cut short by the end of the stream is not yet an error.
        self._frame = self._reader.read(size)
        self._frame_pos = 0
        self._frame_start = self._reader.offset - len(self._frame)

    # --- literals -------------------------------------------------------------------------

    def _int(self) -> None:
        data = self._readline()
        if data == b"00\n":
            self._push(False)
        elif data == b"01\n":
            self._push(True)
        else:
            self._push(self._parse_int(data, 0))

    def _parse_int(self, data: bytes, base: int) -> int:
        try:
            return int(data, base)
        except ValueError as exc:
            self._malformed(f"bad integer literal: {exc}")

    def _long(self) -> None:
        value = self._readline()[:-1]
        if value and value[-1] == ord("L"):
            value = value[:-1]
        self._push(self._parse_int(value, 0))

    def _binlong(self, n: int) -> None:
        data = self._take(n)
        self._push(int.from_bytes(data, "little", signed=True) if data is not None else OPAQUE)

    def _long4(self) -> None:
        (n,) = unpack("<i", self._read(4))
        if n < 0:
            self._malformed("LONG pickle has negative byte count")
        self._binlong(n)

    def _float(self) -> None:
        try:
            self._push(float(self._readline()[:-1]))
        except ValueError as exc:
            self._malformed(f"bad float literal: {exc}")

    def _string(self) -> None:
        data = self._readline()[:-1]
        if len(data) >= 2 and data[0] == data[-1] and data[0] in b"\"'":
            data = data[1:-1]
        else:
            self._malformed("the STRING opcode argument must be quoted")
        try:
            decoded = codecs.escape_decode(data)[0]
        except ValueError as exc:
            self._malformed(f"bad STRING literal: {exc}")
        self._push(self._ascii(decoded))

    def _ascii(self, data: bytes | None) -> Any:
        # joblib's unpickler decodes Python 2 strings as ASCII, strictly.
        if data is None:
            return OPAQUE
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            self._malformed("a Python 2 string that is not ASCII")

    def _binstring(self) -> None:
        (n,) = unpack("<i", self._read(4))
        if n < 0:
            self._malformed("BINSTRING pickle has negative byte count")
        self._push(self._ascii(self._take(n)))

    def _short_binstring(self) -> None:
        self._push(self._ascii(self._take(self._read(1)[0])))

    def _unicode(self) -> None:
        line = self._readline()[:-1]
        try:
            value = str(line, "raw-unicode-escape")
        except UnicodeDecodeError as exc:
            self._malformed(f"bad UNICODE literal: {exc}")
        self._push(value if len(value) <= _KEEP_BYTES else OPAQUE)

    def _binunicode(self, n: int) -> None:
        if n > sys.maxsize:
            self._malformed("BINUNICODE exceeds the maximum size")
        data = self._take(n)
        if data is None:
            self._push(OPAQUE)
            return
        try:
            self._push(str(data, "utf-8", "surrogatepass"))
        except UnicodeDecodeError as exc:
            self._malformed(f"bad BINUNICODE literal: {exc}")

    def _bytes(self, n: int) -> None:
        if n > sys.maxsize:
            self._malformed("BINBYTES exceeds the maximum size")
        data = self._take(n)
        self._push(data if data is not None else OPAQUE)

    def _bytearray8(self) -> None:
        (n,) = unpack("<Q", self._read(8))
        if n > sys.maxsize:
            self._malformed("BYTEARRAY8 exceeds the maximum size")
        self._take(n)
        self._push(OPAQUE)

    def _readonly_buffer(self) -> None:
        self._top()  # only swaps the top for a read-only view of the same bytes

    def _next_buffer(self) -> None:
        self._fail(
            Reason.unsafe_construct, "the pickle refers to out-of-band buffers it does not carry"
        )

    # --- containers -----------------------------------------------------------------------

    def _tuple(self, items: list[Any]) -> Any:
        return tuple(items) if len(items) <= _KEEP_ITEMS else OPAQUE

    def _tuple2(self) -> None:
        second = self._pop()
        self._push((self._pop(), second))

    def _tuple3(self) -> None:
        third = self._pop()
        second = self._pop()
        self._push((self._pop(), second, third))

    def _list(self) -> None:
        items = self._pop_mark()
        out = _List()
        for item in items:
            out.add(item)
        self._push(out)

    def _dict(self) -> None:
        items = self._pop_mark()
        out = _Dict()
        if len(items) % 2:
            self._malformed("DICT with an odd number of items")
        for i in range(0, len(items), 2):
            self._dict_put(out, items[i], items[i + 1])
        self._push(out)

    def _dict_put(self, target: Any, key: Any, value: Any) -> None:
        if isinstance(target, _Dict):
            try:
                target.put(key, value)
            except TypeError:
                self._malformed("an unhashable dictionary key")
        else:
            self._mutate(target, "__setitem__")

    def _mutate(self, target: Any, method: str) -> None:
        """APPEND/SETITEM/ADDITEMS on a non-literal: a method call on the object."""
        if isinstance(target, Global):
            self._unsafe(f"the pickle calls {method} on the class {target.qualified} itself")
        if isinstance(target, (str, bytes, int, float, tuple, bool)) or target is None:
            self._malformed(f"{method} on an immutable {type(target).__name__}")

    def _append(self) -> None:
        value = self._pop()
        target = self._top()
        if isinstance(target, _List):
            target.add(value)
        else:
            self._mutate(target, "append")

    def _appends(self) -> None:
        items = self._pop_mark()
        target = self._top()
        if isinstance(target, _List):
            for item in items:
                target.add(item)
        else:
            self._mutate(target, "extend")

    def _setitem(self) -> None:
        value = self._pop()
        key = self._pop()
        self._dict_put(self._top(), key, value)

    def _setitems(self) -> None:
        items = self._pop_mark()
        target = self._top()
        if len(items) % 2:
            self._malformed("SETITEMS with an odd number of items")
        for i in range(0, len(items), 2):
            self._dict_put(target, items[i], items[i + 1])

    def _additems(self) -> None:
        self._pop_mark()
        target = self._top()
        if not isinstance(target, _Set):
            self._mutate(target, "add")

    def _frozenset(self) -> None:
        self._pop_mark()
        self._push(OPAQUE)

    # --- the memo -------------------------------------------------------------------------

    def _get_text(self) -> None:
        self._get(self._parse_int(self._readline()[:-1], 10))

    def _get(self, index: int) -> None:
        try:
            self._push(self.memo[index])
        except KeyError:
            self._malformed(f"memo value not found at index {index}")

    def _put_text(self) -> None:
        index = self._parse_int(self._readline()[:-1], 10)
        if index < 0:
            self._malformed("negative PUT argument")
        self._put(index)

    def _put(self, index: int) -> None:
        if index not in self.memo and len(self.memo) >= self._limits.max_memo:
            self._fail(Reason.limit, f"more than {self._limits.max_memo} memo entries")
        self.memo[index] = self._top()

    def _memoize(self) -> None:
        self._put(len(self.memo))

    # --- globals and calls ----------------------------------------------------------------

    def _resolve(self, module: str, name: str) -> Global:
        if self._import_protocol() < 3:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        qualified = f"{module}.{name}"
        if not self._allowed(module, name):
            self._fail(
                Reason.disallowed_global,
                f"the pickle references {qualified}, which is not on the allow-list",
                global_name=qualified,
            )
        self.stats.globals.add(qualified)
        return Global(module, name)

    def _line_text(self) -> str:
        try:
            return self._readline()[:-1].decode("utf-8")
        except UnicodeDecodeError:
            self._malformed("a global name that is not UTF-8")

    def _global(self) -> None:
        module = self._line_text()
        name = self._line_text()
        self._push(self._resolve(module, name))

    def _stack_global(self) -> None:
        name = self._pop()
        module = self._pop()
        if type(name) is not str or type(module) is not str:
            if name is OPAQUE or module is OPAQUE:
                self._fail(Reason.limit, "a global name too long to inspect")
            self._malformed("STACK_GLOBAL requires str")
        self._push(self._resolve(module, name))

    def _persid(self) -> None:
        self._unsafe("the pickle uses persistent ids, which the loader would resolve")

    def _ext(self) -> None:
        self._unsafe("the pickle names globals through the copyreg extension registry")

    def _callee(self, value: Any, how: str) -> Global:
        if not isinstance(value, Global):
            self._unsafe(f"{how} of a computed value, not of a named global")
        return value

    def _check_args(self, func: Global, args: Any) -> tuple[Any, ...]:
        if isinstance(args, _List):
            args = tuple(args)
        if not isinstance(args, tuple):
            self._unsafe(f"a call of {func.qualified} with arguments the scanner cannot follow")
        rule = self._rules.get(func.key)
        if rule is not None and (why := rule(args)) is not None:
            self._fail(
                Reason.unsafe_construct,
                f"{func.qualified} is only allowed as numpy/sklearn write it: {why}",
                global_name=func.qualified,
            )
        return args

    def _reduce(self) -> None:
        args = self._pop()
        func = self._callee(self._top(), "REDUCE")
        args = self._check_args(func, args)
        self.stack[-1] = self._called(func, args)

    def _called(self, func: Global, args: tuple[Any, ...]) -> Instance:
        """What calling `func(*args)` builds, with the class it really has where that matters."""
        if func.key in self._policy.instantiates_first_argument:
            # These build an instance of their first argument without running its __init__.
            cls = args[0] if args else None
            if not isinstance(cls, Global):
                self._unsafe(f"{func.qualified} of something that is not a named class")
            if func.name == "_reconstructor" and not _is_builtin_type(
                args[1] if len(args) > 1 else None
            ):
                self._unsafe("copyreg._reconstructor with a base that is not a builtin type")
            return self._new(cls)
        instance = Instance(func, args=args)
        if func.key == JOBLIB_WRAPPER:
            if len(args) > len(_WRAPPER_INIT) or len(args) < 4:
                self._malformed("NumpyArrayWrapper called with the wrong arguments")
            instance.attrs = dict(_WRAPPER_DEFAULTS) | dict(zip(_WRAPPER_INIT, args, strict=False))
        return instance

    def _new(self, cls: Global) -> Instance:
        instance = Instance(cls)
        if cls.key == JOBLIB_WRAPPER:
            instance.attrs = {}
        return instance

    def _newobj(self) -> None:
        args = self._pop()
        cls = self._callee(self._pop(), "NEWOBJ")
        self._check_args(cls, args)
        self._push(self._new(cls))

    def _newobj_ex(self) -> None:
        self._pop()  # kwargs
        args = self._pop()
        cls = self._callee(self._pop(), "NEWOBJ_EX")
        self._check_args(cls, args)
        self._push(self._new(cls))

    def _instantiate(self, cls: Global, args: list[Any]) -> None:
        # pickle calls the class when given arguments, else only `__new__`s it.
        if args or cls.key not in (JOBLIB_WRAPPER, NUMPY_DTYPE):
            self._push(self._called(cls, self._check_args(cls, tuple(args))))
        else:
            self._push(self._new(cls))

    def _inst(self) -> None:
        module = self._line_text()
        name = self._line_text()
        cls = self._resolve(module, name)
        self._instantiate(cls, self._pop_mark())

    def _obj(self) -> None:
        args = self._pop_mark()
        if not args:
            self._malformed("OBJ without a class")
        cls = self._callee(args.pop(0), "OBJ")
        self._instantiate(cls, args)

    # --- BUILD, and joblib's inline arrays ------------------------------------------------

    def _build(self) -> None:
        state = self._pop()
        target = self._top()
        if not isinstance(target, Instance):
            what = target.qualified if isinstance(target, Global) else type(target).__name__
            self._unsafe(f"BUILD sets state on {what}, not on an object the pickle built")
        target.builds += 1
        if target.cls.key == NUMPY_DTYPE:
            if target.builds > 1:
                self._unsafe("a dtype whose state is set twice")
            target.state = state
            # Described now, from the state as it is now: numpy copies it at this point, and a
            # container inside it that the stream mutates later must not change our answer.
            target.described = self._describe_dtype(target)
        elif target.attrs is not None:
            self._set_wrapper_state(target, state)
            if self._joblib:
                self.stack.pop()
                self._read_inline_array(target)
                self.stack.append(OPAQUE)

    def _set_wrapper_state(self, wrapper: Instance, state: Any) -> None:
        assert wrapper.attrs is not None
        slotstate = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slotstate = state
        for part in (state, slotstate):
            if not part:
                continue
            if not isinstance(part, _Dict) or part.dropped:
                self._unsafe("a NumpyArrayWrapper whose state the scanner cannot follow")
            wrapper.attrs.update(part)

    def _read_inline_array(self, wrapper: Instance) -> None:
        """Skip (or scan) exactly the bytes `NumpyArrayWrapper.read_array` would read."""
        attrs = wrapper.attrs
        assert attrs is not None
        dtype = attrs.get("dtype")
        if not isinstance(dtype, Instance) or dtype.cls.key != NUMPY_DTYPE:
            self._unsafe("a NumpyArrayWrapper whose dtype is not a numpy.dtype the pickle built")
        if dtype.described is None:
            self._unsafe("a NumpyArrayWrapper whose dtype has no state")
        itemsize, hasobject = dtype.described
        self.stats.arrays += 1
        if hasobject:
            self._scan_nested()
            return
        shape = attrs.get("shape", _UNSET)
        if not isinstance(shape, tuple) or any(type(x) is not int or x < 0 for x in shape):
            self._unsafe("a NumpyArrayWrapper whose shape is not a tuple of counts")
        count = 1
        for extent in shape:
            count *= extent
        if itemsize <= 0:
            self._unsafe("an inline array of zero-sized items")
        size = count * itemsize
        if count >= 2**63 or size > self._limits.max_array_bytes:
            self._fail(Reason.limit, f"an inline array of {size} bytes")
        if attrs.get("numpy_array_alignment_bytes") is not None:
            padding = self._reader.read(1)
            if not padding:
                self._malformed("the stream ends before an array's padding")
            if padding[0] and self._reader.skip(padding[0]) < padding[0]:
                self._malformed("the stream ends inside an array's padding")
        if self._reader.skip(size) < size:
            self._malformed("the stream ends inside an array's data")
        self.stats.array_bytes += size

    def _scan_nested(self) -> None:
        if self._depth + 1 > self._limits.max_nesting:
            self._fail(Reason.limit, f"pickles nested more than {self._limits.max_nesting} deep")
        self.stats.nested += 1
        nested = PickleScanner(
            self._reader,
            policy=self._policy,
            joblib=False,
            limits=self._limits,
            depth=self._depth + 1,
            stats=self.stats,
            import_protocol=self._import_protocol,
            describe_dtype=self._describe_dtype,
        )
        nested.run()
