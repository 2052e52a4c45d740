"""Read YAML data files into validated models, collecting *every* problem with file, line, entry, field.

Loaders never raise on bad data halfway: they return what validated plus a list of `Problem`s, and
the public `load` functions raise one `DataError` holding all of them, so nothing is half-loaded.

Each file is parsed once, by libyaml (`yaml.CSafeLoader`'s composer), into a node tree; entries are
built from the nodes here, so every value keeps its line. Building is strict where plain YAML is
lax: duplicate keys, tags other than plain YAML values (`!!python/...`), aliases that expand past a
size limit ("billion laughs"), deep nesting, impossible dates, control characters in text, files
that are not regular files (FIFOs, devices, directories) or that link out of the data folder are
all reported as problems of a file, entry and field, never as a traceback or a hang.

Nothing heavy is imported at module level (yaml, pydantic): `sftrl --help` imports this module.
"""

from __future__ import annotations

import difflib
import gc
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import yaml
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")

MAX_FILE_BYTES = 32 * 2**20  # one data file
MAX_ENTRY_NODES = 20_000  # YAML nodes in one entry, aliases expanded (a study has ~50)
MAX_DEPTH = 32  # nesting of lists/mappings inside one file (a study uses 5)
MAX_TEXT = 20_000  # characters in one value
# C0/C1 control characters (tab and newlines allowed), lone surrogates, bidirectional overrides
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with control characters, surrogates and bidi overrides escaped (safe for a terminal)."""
    return _BAD_CHARS.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode(), text)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None  # 1-based
    entry: str | None  # the entry's id (or its position)
    field: str | None  # dotted path inside the entry
    message: str  # what was expected, and what was found

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        what = " ".join(x for x in (f"[{self.entry}]" if self.entry else "", self.field or "") if x)
        return printable(f"{where}: {what + ': ' if what else ''}{self.message}")


class DataError(Exception):
    """Raised with every problem found, never with the first one only."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the data:\n" + "\n".join(map(str, problems)))


def suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _found(value: Any) -> str:
    found = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return found if len(found) <= 80 else found[:77] + "..."


# ---------------------------------------------------------------------------- reading a file safely


def read_text(path: Path, root: Path | None = None) -> tuple[str | None, str | None]:
    """(text, None) for a readable UTF-8 regular file inside `root`, else (None, what is wrong).

    FIFOs, devices and directories are refused from `stat` alone, and the file is opened
    non-blocking and checked again, so a FIFO swapped in meanwhile cannot hang the read.
    """
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            target = path.resolve(strict=True)
            if root is not None and not target.is_relative_to(root.resolve()):
                return None, f"is a symbolic link to {target}, outside the data folder (refused)"
            st = target.stat()
        if not stat.S_ISREG(st.st_mode):
            return None, f"is not a regular file ({_kind(st.st_mode)}); expected a YAML text file"
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None, "is not a regular file; expected a YAML text file"
            raw = f.read(MAX_FILE_BYTES + 1)
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop on older Pythons
        return None, f"cannot be read: {e.strerror if isinstance(e, OSError) and e.strerror else e}"
    if len(raw) > MAX_FILE_BYTES:
        return None, f"is larger than {MAX_FILE_BYTES // 2**20} MiB; split it into several files"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        return None, f"is not UTF-8 text: byte {raw[e.start]:#04x} at line {line} (save the file as UTF-8)"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


# ---------------------------------------------------------------------------- YAML nodes -> values

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t: t for t in ("str", "int", "float", "bool", "null", "timestamp")}


class _Refused(Exception):
    """An entry too large or too deep to build: stop building it."""


_yaml: Any = None  # the yaml module and a fast loader class, bound on first use (keeps imports light)
_Loader: Any = None


def _bind_yaml() -> None:
    """Import yaml once; make a libyaml loader whose tag resolver answers the common cases (quoted
    text, words that no implicit type starts with, lists, mappings) without PyYAML's generic loop."""
    global _yaml, _Loader
    import yaml

    base = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader
    first = frozenset(k for k in base.yaml_implicit_resolvers if k)
    if None in base.yaml_implicit_resolvers:  # a resolver for any first character: no shortcut
        first = frozenset(chr(i) for i in range(0x110000))
    scalar, sequence = yaml.ScalarNode, yaml.SequenceNode
    text_tag, seq_tag, map_tag = _TAG + "str", _TAG + "seq", _TAG + "map"
    slow = base.resolve

    class Loader(base):  # type: ignore[misc, valid-type]
        def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
            if kind is scalar:
                if not implicit[0] or (value and value[0] not in first):
                    return text_tag
            elif not base.yaml_path_resolvers:
                return seq_tag if kind is sequence else map_tag
            return slow(self, kind, value, implicit)

    _yaml, _Loader = yaml, Loader


class _Builder:
    """Builds plain Python values from a libyaml node tree, recording problems instead of raising."""

    def __init__(self, name: str, entry: str | None, problems: list[Problem], file_budget: list[int],
                 constructor: Any):
        self.sc = constructor  # a yaml SafeConstructor, for the typed scalars
        self.name, self.entry, self.problems = name, entry, problems
        self.budget = MAX_ENTRY_NODES
        self.file_budget = file_budget  # shared by the file's entries: [values left]
        self.bad = False

    def fail(self, node: yaml.Node, path: tuple[Any, ...], message: str) -> None:
        self.bad = True
        field = ".".join(map(str, path[:6])) + (".…" if len(path) > 6 else "")
        self.problems.append(Problem(self.name, node.start_mark.line + 1, self.entry, field or None, message))

    def build(self, node: yaml.Node, path: tuple[Any, ...] = (), depth: int = 0) -> Any:
        yaml = _yaml
        self.budget -= 1
        self.file_budget[0] -= 1
        if self.budget < 0 or self.file_budget[0] < 0:
            what = f"this entry has more than {MAX_ENTRY_NODES} values" if self.budget < 0 else \
                "the file has more values than it has characters"
            self.fail(node, path, f"{what} once its aliases are expanded (an alias bomb?); refused")
            raise _Refused
        if depth > MAX_DEPTH:
            self.fail(node, path, f"nested more than {MAX_DEPTH} levels deep (or a recursive alias); refused")
            raise _Refused
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _TAG + "seq":
                self.fail(node, path, f"unsupported YAML tag {node.tag!r}; only plain YAML lists are allowed")
                return None
            return [self.build(child, (*path, i), depth + 1) for i, child in enumerate(node.value)]
        if node.tag != _TAG + "map":
            self.fail(node, path, f"unsupported YAML tag {node.tag!r}; only plain YAML mappings are allowed")
            return None
        return self.mapping(node, path, depth)

    def mapping(self, node: yaml.MappingNode, path: tuple[Any, ...], depth: int) -> dict[Any, Any]:
        yaml = _yaml
        merged: dict[Any, Any] = {}
        out: dict[Any, Any] = {}
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":  # `<<: *base` (YAML merge key): explicit keys win
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in reversed(sources):
                    got = self.build(src, path, depth + 1)
                    if isinstance(got, dict):
                        merged.update(got)
                    elif got is not None:
                        self.fail(src, path, "a merge key '<<' must name a mapping")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(key_node, path, "a key must be a plain value, not a list or mapping")
                continue
            key = self.scalar(key_node, path)
            try:
                hash(key)
            except TypeError:
                self.fail(key_node, path, f"unusable key {_found(key)}")
                continue
            if key in first:
                self.fail(key_node, (*path, key),
                          f"duplicate key {key!r} (first at line {first[key]}); YAML would silently keep only the last")
                continue
            first[key] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, (*path, key), depth + 1)
        return {**merged, **out} if merged else out

    def scalar(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        kind = _SCALAR_TAGS.get(node.tag)
        if kind is None:
            self.fail(node, path, f"unsupported YAML tag {node.tag!r}; only plain values (text, numbers, "
                                  "booleans, dates, null) are allowed")
            return None
        if kind == "str":
            text = node.value
            if len(text) > MAX_TEXT:
                self.fail(node, path, f"text of {len(text)} characters; at most {MAX_TEXT} allowed")
            elif (bad := _BAD_CHARS.search(text)) is not None:
                self.fail(node, path, f"contains control character U+{ord(bad.group()):04X} "
                                      f"(escape sequences, null bytes and surrogates are not allowed): {printable(text[:60])!r}")
            return text
        try:
            return getattr(self.sc, f"construct_yaml_{kind}")(node)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
            what = {"timestamp": "a date/time", "bool": "a boolean"}.get(kind, f"an {kind}" if kind == "int" else f"a {kind}")
            detail = f" ({e})" if isinstance(e, ValueError) and str(e) else ""
            self.fail(node, path, f"{printable(node.value[:60])!r} is not {what}{detail}")
            return None


# ---------------------------------------------------------------------------- error locations


def _node_at(node: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """Follow a pydantic error location down a composed YAML node tree; the deepest node found."""
    import yaml

    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if getattr(k, "value", None) == key]
            if not match:
                # the key itself (e.g. an unknown field) is where the error is
                keys = [k for k, _ in node.value if getattr(k, "value", None) == key]
                return keys[0] if keys else node
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return node
    return node


def _describe(err: dict[str, Any]) -> str:
    kind, inp = err["type"], err.get("input")
    if kind == "extra_forbidden":
        return "unknown field (not in the schema)"
    if kind == "missing":
        return "required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error" and isinstance(inp, dict | list):  # a check of a whole entry names its value
        return msg
    if kind == "string_type" and isinstance(inp, float):
        msg += " (quote arXiv ids in YAML: arxiv: \"2402.03300\", else they read as numbers)"
    return f"{msg}; found {_found(inp)}"


def _entry_name(node: yaml.Node, i: int) -> str:
    """The entry's `id` as written (for messages), else its position."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if getattr(k, "value", None) == "id" and isinstance(v, yaml.ScalarNode) and v.value.strip():
                name = printable(v.value.strip())
                return name if len(name) <= 80 else name[:77] + "..."
    return f"#{i + 1}"


# ---------------------------------------------------------------------------- the one entry point


def read_entries(
    path: Path, key: str, model: type[M], root: Path | None = None
) -> tuple[list[tuple[M, int | None]], list[Problem]]:
    """Validate every entry of the list under `key` in a YAML file.

    Returns (model, line) for each valid entry, and a Problem for each invalid one (all of them).
    """
    name = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
    text, why = read_text(path, root)
    if text is None:
        return [], [Problem(name, None, None, None, f"this file {why}")]
    cache = _Cache.open(text, name, key, model)
    with gc_paused():
        if cache is not None and (hit := cache.get()) is not None:
            return hit
        result = _read(text, name, key, model)
    if cache is not None:
        cache.put(result)
    return result


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: loading allocates many objects and frees few, so
    collections only cost time, and more with every study already in memory (superlinear)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# ---------------------------------------------------------------------------- the validated cache

CACHE_ENV = "SFTRL_CATALOG_CACHE"  # "off", or a folder for the catalogue cache alone
ROOT_ENV = "SFTRL_CACHE"  # the root of every sftrl cache (models too); the catalogue's is ROOT/catalog
OFF = ("0", "off", "no", "false")


def catalog_cache_folder() -> Path | None:
    """$SFTRL_CATALOG_CACHE (a folder, or off), else $SFTRL_CACHE/catalog, else
    $XDG_CACHE_HOME/sftrl/catalog or ~/.cache/sftrl/catalog. `SFTRL_CACHE=off` is still read as
    "no catalogue cache" (its old meaning); the model cache never takes "off" for a folder."""
    own, root = os.environ.get(CACHE_ENV, ""), os.environ.get(ROOT_ENV, "")
    if own.lower() in OFF or (not own and root.lower() in OFF):
        return None
    if own:
        return Path(own)
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sftrl"
    return base / "catalog"
CACHE_MIN_CHARS = 4_000  # smaller files parse in a millisecond; larger ones, relations.yaml included,
# are cached, so a catalogue read wholly from the cache never imports yaml (~25 ms of a CLI call)
CACHE_MAX_FILES = 2000  # oldest dropped beyond this


class _Cache:
    """What `_read` returned for one file, pickled under a key that hashes everything the result
    depends on: the file's text and shown name, the list key, the model, the source of the schema
    and of this module, the library versions, and the month (arXiv ids may not be from the future).
    Any change gives a new key, so a stale entry is never used; the YAML stays the source of truth.
    The folder is private to its user (mode 0700, owner checked before anything is read)."""

    _code: str | None = None

    def __init__(self, folder: Path, digest: str):
        self.file = folder / f"{digest}.pickle"

    @classmethod
    def open(cls, text: str, name: str, key: str, model: type) -> _Cache | None:
        folder = catalog_cache_folder()
        if len(text) < CACHE_MIN_CHARS or folder is None:
            return None
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            st = folder.stat()
            if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
                return None  # someone else's, or writable by others: never unpickle from it
        except OSError:
            return None
        import hashlib

        if cls._code is None:
            import importlib.util

            import pydantic

            here = Path(__file__).resolve().parent
            h = hashlib.sha256(f"{pydantic.VERSION} {sys.version}".encode())
            # PyYAML's version without importing it: its __init__.py (which states __version__)
            spec = importlib.util.find_spec("yaml")
            for f in [here / "loading.py", here / "schema.py", *([Path(spec.origin)] if spec and spec.origin else [])]:
                h.update(f.read_bytes())
            cls._code = h.hexdigest()
        from datetime import date

        h = hashlib.sha256(f"{cls._code}\0{name}\0{key}\0{model.__module__}.{model.__qualname__}\0"
                           f"{date.today():%Y-%m}\0".encode())
        h.update(text.encode("utf-8", "surrogatepass"))
        return cls(folder, h.hexdigest())

    def get(self) -> Any:
        import pickle

        try:
            with open(self.file, "rb") as f:
                return pickle.load(f)
        except Exception:  # absent, truncated, or from another version: read the YAML instead
            return None

    def put(self, result: Any) -> None:
        import pickle

        tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}")
        try:
            tmp.write_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(tmp, self.file)
            entries = sorted(self.file.parent.glob("*.pickle"), key=lambda p: p.stat().st_mtime)
            for old in entries[:-CACHE_MAX_FILES]:
                old.unlink(missing_ok=True)
        except OSError:
            tmp.unlink(missing_ok=True)


def _read(text: str, name: str, key: str, model: type[M]) -> tuple[list[tuple[M, int | None]], list[Problem]]:
    import yaml
    from pydantic import ValidationError

    if _Loader is None:
        _bind_yaml()
    loader = _Loader(text)
    try:
        tree = loader.get_single_node()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        if isinstance(e, yaml.reader.ReaderError):  # e.g. a null byte or an ESC in the file
            line = text.encode("utf-8", "surrogatepass")[: e.position].count(b"\n") + 1
            char = chr(e.character) if isinstance(e.character, int) else str(e.character)
            problem = f"character {printable(char)!r} is not allowed in a YAML file ({e.reason})"
        else:
            problem = getattr(e, "problem", None) or str(e)
        return [], [Problem(name, line, None, None, f"YAML syntax error: {printable(str(problem))}")]
    except RecursionError:
        return [], [Problem(name, None, None, None, "YAML nested too deeply to read")]
    finally:
        loader.dispose()

    def top(message: str, line: int = 1, field: str | None = None) -> tuple[list, list[Problem]]:
        return [], [Problem(name, line, None, field, message)]

    if tree is None:
        return top(f"the file is empty; expected '{key}:' with a list (write '{key}: []' for none)")
    if not isinstance(tree, yaml.MappingNode):
        return top(f"expected a mapping with a top-level '{key}:' list; found a {_node_kind(tree)}",
                   tree.start_mark.line + 1)
    items = None
    seen: dict[str, int] = {}
    for k, v in tree.value:
        kname = printable(str(getattr(k, "value", "?")))
        line = k.start_mark.line + 1
        if not isinstance(k, yaml.ScalarNode) or k.value != key:
            return top(f"unknown top-level key {kname!r}; expected only '{key}:'", line)
        if kname in seen:
            return top(f"duplicate top-level key '{key}:' (first at line {seen[kname]}); YAML would keep only "
                       f"the second list and silently drop the first: merge the two lists", line, key)
        seen[kname] = line
        items = v
    if not isinstance(items, yaml.SequenceNode) or items.tag != _TAG + "seq":
        found = "nothing" if isinstance(items, yaml.ScalarNode) and items.tag == _TAG + "null" else \
            f"a {_node_kind(items)}" if items is not None else "nothing"
        return top(f"expected a list under '{key}:', found {found} (write '{key}: []' for none)",
                   items.start_mark.line + 1 if items is not None else 1, key)

    good: list[tuple[M, int | None]] = []
    problems: list[Problem] = []
    file_budget = [len(text) + 1000]  # without aliases a file cannot hold more values than characters
    constructor = yaml.constructor.SafeConstructor()
    for i, node in enumerate(items.value):
        line = node.start_mark.line + 1
        entry = _entry_name(node, i)
        builder = _Builder(name, entry, problems, file_budget, constructor)
        try:
            item = builder.build(node, (), 1)
        except _Refused:
            if file_budget[0] < 0:
                break
            continue
        if builder.bad:
            continue
        if not isinstance(item, dict):
            problems.append(Problem(name, line, entry, None, f"expected a mapping, found {_found(item)}"))
            continue
        try:
            good.append((model.model_validate(item), line))
        except ValidationError as e:
            for err in e.errors():
                loc = tuple(err["loc"])
                at = _node_at(node, loc)
                problems.append(Problem(name, at.start_mark.line + 1 if at is not None else line, entry,
                                        ".".join(map(str, loc)) or None, _describe(err)))
        except (ValueError, TypeError, OverflowError, RecursionError) as e:  # a validator's own failure
            problems.append(Problem(name, line, entry, None, f"cannot be validated: {printable(str(e))}"))
    return good, problems


def _node_kind(node: yaml.Node | None) -> str:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return "list"
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    return f"plain value {_found(getattr(node, 'value', None))}"
