"""A run folder's reading and writing, in one place: the lock, the run record, Results, env.json.

One writer at a time holds a folder (``fcntl.flock`` on ``.lock``; a second one is told the PID of
the first). ``run.json`` keeps the grid and options of every invocation, start or resume, appended
and never rewritten. ``results.jsonl`` is one Result a line, appended, flushed and fsynced; a line
that is not a Result (truncated, not JSON, bad UTF-8, wrong field types) is skipped with one warning
naming the file and line, and when a Config has several Results (a retried error) the latest wins.
Checkpoints load through ``resbench.weights.load_checkpoint`` (``weights_only=True``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import fcntl
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from resbench.datamodel import Result
from resbench.weights import load_checkpoint as load_checkpoint  # the trainer's checkpoints too

RESULTS_FILE = "results.jsonl"
ENV_FILE = "env.json"
MAX_BATCH_FILE = "max_batch.json"  # written by `sweep --find-max-batch`
RUN_FILE = "run.json"  # the grid and every invocation that wrote to the folder
LOCK_FILE = ".lock"
STATUSES = ("ok", "oom", "error", "skipped")
# the types a Result field may have on disk, from its annotation (an int is a fine float)
_TYPES_OF = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "None": (type(None),),
             "list[float]": (list,)}  # fmt: skip
_FIELD_TYPES = {
    f.name: tuple(t for part in str(f.type).split(" | ") for t in _TYPES_OF.get(part, (object,)))
    for f in dataclasses.fields(Result)
}


class FolderBusy(ValueError):
    """Another process writes to this run folder: one line, exit code 2."""


# ----------------------------------------------------------------------------- the lock


def check_free(folder: Path) -> None:
    """FolderBusy if another process holds ``folder`` now (checked before judging its contents)."""
    if (Path(folder) / LOCK_FILE).is_file():
        with locked(folder):
            pass


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[Path]:
    """Hold ``folder`` for this process (created if absent); FolderBusy if another holds it.

    The lock is ``flock`` on ``folder/.lock``, which holds the holder's PID: the kernel lets it go
    when the process ends, however it ends, so a killed run never leaves a stale lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderBusy(
                f"{folder} is in use by another run (PID {holder}); wait for it to finish, or "
                "choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# ----------------------------------------------------------------------------- the run record


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def read_record(folder: Path) -> dict:
    """run.json as a dict ({} when absent); a damaged one is a ValueError naming it."""
    path = Path(folder) / RUN_FILE
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is damaged ({exc}); it records the run's grid") from None
    if not isinstance(record, dict) or not isinstance(record.get("invocations"), list):
        raise ValueError(f"{path} is not a resbench run record (no list of invocations)")
    return record


def recorded_options(folder: Path) -> dict:
    """The options of the latest invocation that recorded any ({} for a run without run.json)."""
    for entry in reversed(read_record(folder).get("invocations", [])):
        if isinstance(entry, dict) and isinstance(entry.get("options"), dict):
            return entry["options"]
    return {}


def record_invocation(folder: Path, command: str, options: dict, resume: bool) -> dict:
    """Append this invocation (command, time, PID, options) to run.json, atomically; return it."""
    folder = Path(folder)
    record = read_record(folder) or {"invocations": []}
    entry = {"command": command, "started": utc_now(), "pid": os.getpid(), "resume": resume,
             "options": options}  # fmt: skip
    record["invocations"].append(entry)
    write_atomic(folder / RUN_FILE, json.dumps(record, indent=2) + "\n")
    return entry


def holds_run(folder: Path, names: Sequence[str] = (RESULTS_FILE, RUN_FILE)) -> bool:
    """Whether ``folder`` already holds a run: any of ``names`` present and not empty."""
    folder = Path(folder)
    return any((folder / n).exists() and (folder / n).stat().st_size > 0 for n in names)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and a rename: a kill mid-write leaves the old file whole."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- Results


def read_jsonl(path: Path, warn: bool = True) -> list[tuple[int, dict]]:
    """(line number, object) for every line of ``path`` that is a JSON object; others are skipped
    with one warning each, naming the file and the line."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            _skip(path, number, f"not UTF-8 text ({exc.reason} at byte {exc.start})", warn)
            continue
        except json.JSONDecodeError:
            _skip(path, number, "an incomplete line (a run killed mid-write?)", warn)
            continue
        if not isinstance(row, dict):
            _skip(path, number, f"a JSON {type(row).__name__}, not an object", warn)
            continue
        rows.append((number, row))
    return rows


_SAID: set[tuple[int, str, int, str]] = set()  # (command, file, line, why) already warned of


def _skip(path: Path, number: int, why: str, warn: bool = True) -> None:
    """Warn of a skipped line once per command (``cli.commands_run``): a sweep reads its
    results.jsonl to resume, to report and to judge the load, and one bad line is one warning,
    not three. ``warn`` False: a read that says nothing (and so leaves the warning to the next)."""
    from resbench import cli

    said = (cli.commands_run, str(Path(path).resolve()), number, why)
    if not warn or said in _SAID:
        return
    _SAID.add(said)
    warnings.warn(f"{path}:{number}: skipping {why}", UserWarning, stacklevel=3)


def result_from_row(row: dict) -> Result:
    """A Result from one line's object; ValueError naming the field whose type is wrong."""
    for name in ("model", "batch_size"):
        if name not in row:
            raise ValueError(f"no {name!r}")
    for name, types in _FIELD_TYPES.items():
        value = row.get(name)
        if name in row and not (isinstance(value, types) and _bool_ok(value, types)):
            raise ValueError(f"{name!r} is {value!r}, not {' or '.join(t.__name__ for t in types)}")
    if row.get("status", "ok") not in STATUSES:
        raise ValueError(f"'status' is {row.get('status')!r}, not one of {', '.join(STATUSES)}")
    return Result.from_dict(row)


def _bool_ok(value, types: tuple[type, ...]) -> bool:
    return bool in types or not isinstance(value, bool)  # JSON true is no batch size


def read_results_file(path: Path, warn: bool = True) -> list[Result]:
    """Every Result line of ``path``, in file order; other lines skipped with a warning."""
    results = []
    for number, row in read_jsonl(path, warn):
        try:
            results.append(result_from_row(row))
        except ValueError as exc:
            _skip(Path(path), number, f"a line that is not a Result ({exc})", warn)
    return results


def latest(results: Iterable[Result]) -> list[Result]:
    """One Result per Config: the last one written wins (a retried error supersedes the old one)."""
    by_key: dict[tuple, Result] = {}
    for r in results:
        by_key.pop(r.key(), None)  # re-insert, so the order is that of the Results kept
        by_key[r.key()] = r
    return list(by_key.values())


def read_results(folder: Path, warn: bool = True) -> list[Result]:
    """The run's Results, the latest per Config; malformed lines skipped with a warning."""
    return latest(read_results_file(Path(folder) / RESULTS_FILE, warn))


def read_env(folder: Path) -> dict:
    """env.json ({} when absent); a damaged one is skipped with one warning naming it."""
    path = Path(folder) / ENV_FILE
    if not path.exists():
        return {}
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        warnings.warn(f"{path}: skipping a damaged environment record ({exc})", stacklevel=2)
        return {}
    if not isinstance(env, dict):
        warnings.warn(f"{path}: skipping an environment record that is not an object", stacklevel=2)
        return {}
    return env


class ResultLog:
    """Appends Results to a JSON-lines file, flushed and fsynced one by one.

    Opening it makes the file end on a line boundary: a complete last line that only lacks its
    newline gets one; a partial one (a kill mid-write) is cut, with a warning.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _end_on_a_line(self.path)
        self._file = self.path.open("a", encoding="utf-8")

    def append(self, result: Result) -> None:
        try:
            self._file.write(json.dumps(result.to_dict()) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:  # a full or read-only disk: name the file it could not write
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a full disk already failed the write that mattered
            self._file.close()

    def __enter__(self) -> ResultLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _end_on_a_line(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    tail = data[cut:]
    try:
        json.loads(tail.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        number = data.count(b"\n") + 1
        warnings.warn(
            f"{path}:{number}: dropping a truncated last line ({len(tail)} bytes; a run killed "
            "mid-write?)",
            UserWarning,
            stacklevel=3,
        )
        with path.open("r+b") as f:
            f.truncate(cut)
        return
    with path.open("ab") as f:  # whole, only its newline is missing: keep it
        f.write(b"\n")


def merge_parts(out: Path, world: int) -> int:
    """Append every rank's part to results.jsonl (skipping what is there already); remove the parts."""
    have = {r.key(): r for r in read_results(out)}
    added = 0
    with ResultLog(out / RESULTS_FILE) as log:
        for rank in range(world):
            for r in read_results_file(out / "parts" / f"rank{rank}.jsonl"):
                if r.key() not in have or have[r.key()] != r:
                    log.append(r)
                    have[r.key()] = r
                    added += 1
    parts = sorted(out.glob("max_batch.rank*.json"))
    if parts:
        found = [row for part in parts for row in json.loads(part.read_text())]
        write_atomic(out / MAX_BATCH_FILE, json.dumps(found, indent=2) + "\n")
        for part in parts:
            part.unlink()
    for rank in range(world):
        (out / "parts" / f"rank{rank}.jsonl").unlink(missing_ok=True)
    if (out / "parts").exists() and not any((out / "parts").iterdir()):
        (out / "parts").rmdir()
    return added
