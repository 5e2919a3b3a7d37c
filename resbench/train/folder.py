"""A training run folder's rules: what it holds, continuing it, replacing it, and stopping safely.

A folder that holds a run is continued (``--resume``) or replaced (``--overwrite``), never silently
mixed. ``--resume`` continues the recorded run: the flags not given take the recorded values
(``run.json``); a recipe flag given with another value, another ``--runs``, or fewer ``--epochs``
than were trained is refused. ``--overwrite`` removes every file the trainer wrote for the old run
(top level and ``seedN/`` folders) before it starts, keeping only ``run.json`` (the record of every
invocation); a folder that also holds files the trainer did not write is refused, so nothing of
anyone else's is ever deleted. Ctrl-C and SIGTERM wait for a checkpoint being written, then stop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from resbench import cli, runfolder
from resbench.train.recipe import (
    CHECKPOINT,
    LOG_FILE,
    RECIPE,
    RUN_FILES,
    TrainConfig,
    flag_of,
    plain,
    read_checkpoint,
    recipe_differences,
)

# every file the trainer writes in each run's folder, and beside them at the top of --out
RUN_DIR_FILES = (*RUN_FILES, "train.csv")
TOP_FILES = ("summary.md", "accuracy_vs_time.png", runfolder.ENV_FILE)
KEPT_FILES = (runfolder.RUN_FILE, runfolder.LOCK_FILE)  # every invocation's record; the lock
SEED_DIR = re.compile(r"seed\d+")


def run_dirs_of(out: Path, cfg: TrainConfig, runs: int) -> list[Path]:
    """One run: --out itself; several: --out/seed<seed>, --out/seed<seed+1>, ..."""
    return [out if runs == 1 else out / f"seed{cfg.seed + i}" for i in range(runs)]


def _owned(name: str, names: tuple[str, ...]) -> bool:
    """``name`` is one of ``names`` or the temporary file an atomic write of one leaves."""
    return name in names or name.removesuffix(".tmp") in names


def _seed_dirs(out: Path) -> list[Path]:
    dirs = [d for d in out.iterdir() if SEED_DIR.fullmatch(d.name) and d.is_dir()]
    return sorted((d for d in dirs if not d.is_symlink()), key=lambda d: int(d.name[4:]))


def holds_a_run(out: Path) -> bool:
    """Whether ``out`` holds a training run, of one seed (top level) or several (seedN/)."""
    if not out.is_dir():
        return False
    return any(runfolder.holds_run(d, RUN_FILES) for d in [out, *_seed_dirs(out)])


def foreign_files(out: Path) -> list[str]:
    """The files and folders in ``out`` that the trainer did not write, relative to ``out``."""
    foreign = []
    for entry in sorted(out.iterdir()):
        if entry.is_symlink() or not (entry.is_file() or SEED_DIR.fullmatch(entry.name)):
            owned = False
        elif entry.is_file():
            owned = _owned(entry.name, (*RUN_DIR_FILES, *TOP_FILES, *KEPT_FILES))
        else:
            inside = [f"{entry.name}/{e.name}" for e in sorted(entry.iterdir())
                      if e.is_symlink() or not e.is_file() or not _owned(e.name, RUN_DIR_FILES)]  # fmt: skip
            foreign += inside
            owned = True
        if not owned:
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    return foreign


def remove_old_run(out: Path) -> None:
    """Delete every file the trainer wrote for the run in ``out`` (checked by ``foreign_files``)."""
    for d in _seed_dirs(out):
        for entry in d.iterdir():
            if entry.is_file() and _owned(entry.name, RUN_DIR_FILES):
                entry.unlink()
        with contextlib.suppress(OSError):  # not empty: something appeared since; left alone
            d.rmdir()
    for entry in out.iterdir():
        if entry.is_file() and _owned(entry.name, (*RUN_DIR_FILES, *TOP_FILES)):
            entry.unlink()


# ----------------------------------------------------------------------------- resume


def _recorded(out: Path) -> dict:
    """The run's options: run.json's latest, else the first checkpoint's recipe; {} if neither."""
    options = runfolder.recorded_options(out)
    if options:
        return options
    seeds = _seed_dirs(out)
    for d, runs in [(out, 1), *[(d, len(seeds)) for d in seeds[:1]]]:
        if (d / CHECKPOINT).is_file():
            config = runfolder.load_checkpoint(d / CHECKPOINT, "cpu").get("config")
            if isinstance(config, dict):
                return config | {"runs": runs}
    return {}


def _as_field(default, value):
    return tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value


def resume_recipe(
    out: Path, cfg: TrainConfig, runs: int | None, given: set[str]
) -> tuple[TrainConfig, int]:
    """The recorded recipe and number of runs, with the flags given in place of the recorded
    values; a UsageError (one line) when a given recipe flag or --runs differs from the record."""
    if out.is_dir():
        runfolder.check_free(out)  # a run in progress is named as such, before its record is read
    recorded = _recorded(out) if out.is_dir() else {}
    if not recorded:
        raise cli.UsageError(
            f"--resume: {out} holds no training run ({CHECKPOINT} or {runfolder.RUN_FILE}), so "
            "there is nothing to continue (start without --resume)"
        )
    now = dataclasses.asdict(cfg)
    taken = {k: v for k, v in now.items() if k not in recorded or flag_of(k)[1] in given}
    differ = recipe_differences({k: recorded[k] for k in RECIPE if k in recorded}, taken)
    if differ:
        raise cli.UsageError(
            f"--resume: {out} holds a run with other settings ({'; '.join(differ)}); resume "
            "without those flags (the recorded values are used), or start a new run with "
            "--overwrite or another --out"
        )
    held = int(recorded.get("runs", 1))
    if runs is not None and runs != held:
        names = ", ".join(d.name for d in run_dirs_of(out, cfg, held)) if held > 1 else "one seed"
        raise cli.UsageError(
            f"--resume --runs {runs}: {out} holds {cli.plural(held, 'run')} ({names}); "
            f"resume with --runs {held}, or without --runs"
        )
    merged = {k: taken[k] if k in taken else _as_field(v, recorded[k]) for k, v in now.items()}
    return TrainConfig(**merged), held


def check_folder(out: Path, run_dirs: list[Path], args, base: TrainConfig) -> None:
    """A folder that holds a run is continued (--resume) or replaced (--overwrite), never mixed;
    --resume needs a checkpoint of the same recipe and no fewer epochs than it has trained."""
    if out.is_dir():
        runfolder.check_free(out)  # a run in progress is named as such, with its PID
    if holds_a_run(out) and not (args.resume or args.overwrite):
        raise cli.UsageError(
            f"{out} already holds a training run; continue it with --resume, replace it with "
            "--overwrite, or choose another --out"
        )
    if args.overwrite and out.is_dir():
        foreign = foreign_files(out)
        if foreign:
            shown = ", ".join(foreign[:5]) + (
                f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            )
            raise cli.UsageError(
                f"--overwrite: {out} holds files the trainer did not write ({shown}); they are "
                "not deleted: move them away, or choose another --out"
            )
    if args.resume:
        first = run_dirs[0] / CHECKPOINT
        if not first.exists():
            raise cli.UsageError(
                f"--resume: {first} does not exist, so there is nothing to continue (start "
                "without --resume)"
            )
        done = 0
        for i, run_dir in enumerate(run_dirs):  # every checkpoint there is loads and matches
            if (run_dir / CHECKPOINT).exists():
                cfg = dataclasses.replace(base, seed=base.seed + i)
                ckpt = read_checkpoint(run_dir / CHECKPOINT, cfg, "cpu")
                done = max(done, int(ckpt["state"]["epoch"]))
        if base.epochs < done:
            raise cli.UsageError(
                f"--resume --epochs {base.epochs}: {out} has trained {cli.plural(done, 'epoch')} "
                f"already; resume with --epochs {done} or more, or without --epochs"
            )


def start_folder(out: Path, run_dirs: list[Path], args, base, runs: int, command: str, env: dict):
    """Remove the old run (--overwrite) and record this invocation; a new run gets its env.json."""
    out.mkdir(parents=True, exist_ok=True)
    if args.overwrite:
        remove_old_run(out)
    if not args.resume:
        for run_dir in run_dirs:
            for name in RUN_DIR_FILES:
                (run_dir / name).unlink(missing_ok=True)
    if not args.resume or not (out / runfolder.ENV_FILE).exists():
        runfolder.write_atomic(out / runfolder.ENV_FILE, json.dumps(env, indent=2) + "\n")
    options = {k: plain(v) for k, v in dataclasses.asdict(base).items()} | {"runs": runs}
    runfolder.record_invocation(out, command, options, args.resume)


# ----------------------------------------------------------------------------- stopping


def resume_command(out: Path, args, world: int) -> str:
    """The command that continues this run: the recorded recipe and data folder need only where
    it is."""
    if world > 1:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        nodes = [] if local == world else ["--nnodes", str(world // local)]
        head = ["torchrun", *nodes, "--nproc-per-node", str(local), "-m", "resbench.train"]
    else:
        head = ["python", "-m", "resbench.train"]
    tail = [flag for flag, on in (("--no-verify", args.no_verify), ("--no-progress", args.no_progress)) if on]  # fmt: skip
    return shlex.join([*head, "--resume", "--out", str(out), *tail])


def _epochs_kept(run_dir: Path) -> int:
    """The epochs whose checkpoint is on disk (train.jsonl is written after it, one line each)."""
    log = run_dir / LOG_FILE
    return len(log.read_text().splitlines()) if log.is_file() else 0


def kept_text(out: Path, run_dirs: list[Path], epochs: int) -> str:
    """What an interrupted run keeps: "out/checkpoint.pt keeps epoch 2 of 5" or per seed."""
    kept = [_epochs_kept(d) for d in run_dirs]
    if not any(kept):
        return "no epoch had ended, so no checkpoint is kept"
    if len(run_dirs) == 1:
        return f"{run_dirs[0] / CHECKPOINT} keeps epoch {kept[0]} of {epochs}"
    each = ", ".join(
        f"{d.name} {k} of {cli.plural(epochs, 'epoch')}"
        for d, k in zip(run_dirs, kept, strict=True)
    )
    return f"the checkpoints in {out} keep {each}"


class Stop:
    """Ctrl-C and SIGTERM as KeyboardInterrupt, held back while a checkpoint is being written.

    A signal that arrives inside ``writing()`` is raised when the write is done, so a stop never
    leaves a checkpoint, its log line or a summary half-written (the writes are atomic too).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._writing = False
        self._pending: int | None = None

    def _handle(self, signum, frame) -> None:
        if self._writing:
            self._pending = signum
            return
        raise KeyboardInterrupt(f"signal {signum}")

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stop]:
        if threading.current_thread() is not threading.main_thread():  # signals go to the main one
            yield self
            return
        self._pending = None
        previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        outer, self._writing = self._writing, True
        try:
            yield
        finally:
            self._writing = outer
        if not outer and self._pending is not None:
            signum, self._pending = self._pending, None
            raise KeyboardInterrupt(f"signal {signum}")
