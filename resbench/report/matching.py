"""Which rows of two runs are the same Config, and, for those that are not, what kept them apart.

A row is keyed on its Config and its setting label, exactly, with one exception: a thread count
left to its default ("all cores, each machine's own") matches the other run's default, whatever the
two machines' core counts, so a run on 2 cores compares with one on 16. A count is left to its
default when the run named no ``--threads``, no thread variable (OMP_NUM_THREADS, MKL_NUM_THREADS)
limited the process, and the row ran the process's default count shared between its streams. An
explicit ``--threads`` keys exactly. A run from before env.json recorded the thread variables
(``thread_env``) is taken at its word: its default count is the one its process had.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

from resbench.datamodel import Config, Result
from resbench.report.loading import setting_label

DEFAULT = "default"  # the key's thread count where it was left to the machine
FIELDS = tuple(f.name for f in dataclasses.fields(Config))
SHOWN_REASONS = 4  # the commonest differences named where rows did not match


def threads_left_default(env: dict | None, r: Result) -> bool:
    """Whether ``r``'s thread count is its machine's default rather than a choice (see above)."""
    if not env:
        return False
    command = str(env.get("command") or "").split()
    if any(tok == "--threads" or tok.startswith("--threads=") for tok in command):
        return False
    if env.get("thread_env"):  # OMP_NUM_THREADS or MKL_NUM_THREADS set for the process
        return False
    total = env.get("torch_threads")
    if not isinstance(total, int) or r.threads is None:
        return False
    return r.threads == max(1, total // max(1, r.streams or 1))


def key(r: Result, env: dict | None = None) -> tuple:
    """The row's identity across runs: its Config, with a default thread count as DEFAULT."""
    values = dict(zip(FIELDS, r.key(), strict=True))
    if threads_left_default(env, r):
        values["threads"] = DEFAULT
    return (*values.values(), setting_label(r))


@dataclasses.dataclass
class Matching:
    pairs: list[tuple[Result, Result]]  # (new, old) of the same Config
    new_only: list[Result]  # ok rows of the new run with no ok row in the old
    old_only: list[Result]


def match(
    new: Sequence[Result], old: Sequence[Result], new_env: dict | None, old_env: dict | None
) -> Matching:
    """The ok rows of both runs paired by ``key``, and those left over on each side."""
    old_ok = [r for r in old if r.status == "ok"]
    old_by_key = {key(r, old_env): r for r in old_ok}
    pairs, new_only, taken = [], [], set()
    for r in new:
        if r.status != "ok":
            continue
        k = key(r, new_env)
        if k in old_by_key:
            pairs.append((r, old_by_key[k]))
            taken.add(k)
        else:
            new_only.append(r)
    old_only = [r for r in old_ok if key(r, old_env) not in taken]
    return Matching(pairs, new_only, old_only)


def _shown(k: tuple, r: Result) -> tuple:
    """A key as it is written: a default thread count as "2 (default)"."""
    values = dict(zip(FIELDS, k, strict=False))
    if values["threads"] == DEFAULT:
        values["threads"] = f"{r.threads} (default)"
    return tuple(values.values())


def _differences(a: tuple, b: tuple, a_shown: tuple, b_shown: tuple) -> list[tuple]:
    return [
        (f, x, y)
        for f, x, y, kx, ky in zip(FIELDS, a_shown, b_shown, a, b, strict=False)
        if kx != ky
    ]


def reasons(m: Matching, new_env: dict | None, old_env: dict | None) -> list[str]:
    """What kept the unmatched rows apart, commonest first: each unmatched new row against the old
    rows nearest to it (fewest fields apart), grouped by the fields that differ, as "threads (new
    2 (default); old 1): 2 rows"."""
    olds = m.old_only or [base for _, base in m.pairs]
    old_keys = [(key(o, old_env), o) for o in olds]
    rows: Counter[tuple[str, ...]] = Counter()
    values: dict[tuple[str, ...], tuple[set, set]] = {}
    for r in m.new_only:
        k = key(r, new_env)
        diffs = [_differences(k, ok, _shown(k, r), _shown(ok, o)) for ok, o in old_keys]
        if not diffs:
            continue
        fewest = min(len(d) for d in diffs)
        for names in {tuple(f for f, _, _ in d) for d in diffs if len(d) == fewest}:
            rows[names] += 1
            new_seen, old_seen = values.setdefault(names, (set(), set()))
            for d in diffs:
                if tuple(f for f, _, _ in d) == names:
                    new_seen.add(", ".join(str(x) for _, x, _ in d))
                    old_seen.add(", ".join(str(y) for _, _, y in d))
    out = []
    for names, n in rows.most_common(SHOWN_REASONS):
        new_seen, old_seen = values[names]
        out.append(
            f"{', '.join(names)} (new {' or '.join(sorted(new_seen))}; old "
            f"{' or '.join(sorted(old_seen))}): {n} row{'s' if n != 1 else ''}"
        )
    return out


def unmatched_sentence(m: Matching, new_env: dict | None, old_env: dict | None) -> str:
    """One line on the rows that found no partner: how many on each side, and why; "" if none."""
    if not m.new_only and not m.old_only:
        return ""
    text = (
        f"{len(m.new_only)} ok Config{'s' if len(m.new_only) != 1 else ''} of the new run and "
        f"{len(m.old_only)} of the old matched nothing in the other run"
    )
    why = reasons(m, new_env, old_env)
    return text + (f"; nearest rows differ in {'; '.join(why)}" if why else "") + "."


def threads_shown(r: Result, base: Result) -> str:
    """ "old/new" thread counts where they differ (both left to default), else ""."""
    return "" if r.threads == base.threads else f"{base.threads}/{r.threads}"
