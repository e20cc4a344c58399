"""A run owns its output folder: one run at a time (a lock), a finished run is never overwritten silently, an
unfinished one (killed) is continued only with the same settings.

Files kept in the folder: `.hf-methods.lock` (pid, host, start, command of the run that holds it; removed when it
ends) and `UNFINISHED-RUN.json` (the recipe of the run that wrote the folder, and what to do with it: in plain sight,
so that a killed or failed run's folder says it is incomplete; removed when the run finishes, when
`report.json` is written last). `Run` claims the folder on the main process (`claim`).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

LOCK = ".hf-methods.lock"
STATE = "UNFINISHED-RUN.json"
REPORT = "report.json"
# recipe fields that do not change what a run computes: a rerun may change them and still continue
NOT_SETTINGS = {
    "num_threads",
    "push_to_hub",
    "hub_model_id",
    "hub_private",
    "overwrite_output_dir",
    "output_dir",
    "save_checkpoints",
}


class RunFolderError(ValueError):
    """The output folder cannot be used as asked; the message says why and what to do."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _take_lock(out: Path) -> Path:
    """Create the lock file atomically (O_EXCL); a lock left by a dead process on this host is taken over."""
    lock = out / LOCK
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "argv": sys.argv}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                other = json.loads(lock.read_text())
            except (OSError, ValueError):
                other = {}
            pid, host = other.get("pid"), other.get("host")
            if isinstance(pid, int) and pid != os.getpid() and (host != socket.gethostname() or _alive(pid)):
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(other.get("started", 0)))
                raise RunFolderError(
                    f"output_dir {str(out)!r} is in use by another hf-methods run (pid {pid} on {host}, since "
                    f"{since}): wait for it to end or choose another --output_dir"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        atexit.register(release, out)
        return lock
    raise RunFolderError(f"could not lock output_dir {str(out)!r}; remove {LOCK} in it if no run is using it")


def release(out: str | Path) -> None:
    """Remove the lock if this process holds it."""
    lock = Path(out) / LOCK
    try:
        if json.loads(lock.read_text()).get("pid") == os.getpid():
            lock.unlink()
    except (OSError, ValueError):
        pass


def settings(recipe) -> dict:
    """The recipe fields that decide what a run computes (JSON-comparable)."""
    values = json.loads(json.dumps(dataclasses.asdict(recipe), default=str))
    return {k: v for k, v in values.items() if k not in NOT_SETTINGS}


def _clear(out: Path) -> None:
    for entry in out.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def claim(out: str | Path, recipe, overwrite: bool = False) -> str:
    """Make `out` this run's folder; returns "new", "continued" (an unfinished run with the same settings) or
    "overwritten". Raises `RunFolderError` for a folder in use, a finished run (unless `overwrite`), an unfinished
    run with other settings (unless `overwrite`) and a non-empty folder hf-methods did not write (unless
    `overwrite`)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunFolderError(f"output_dir {str(out)!r} is a file or lies inside one: choose a folder") from None
    except PermissionError:
        raise RunFolderError(f"output_dir {str(out)!r} cannot be created here (permission denied)") from None
    _take_lock(out)
    try:
        mine = settings(recipe)
        entries = [e.name for e in out.iterdir() if e.name != LOCK]
        state_path = out / STATE
        how = "new"
        if entries:
            fix = "choose another --output_dir, or pass --overwrite_output_dir true to replace it"
            if not overwrite:
                if (out / REPORT).is_file() and not state_path.is_file():
                    raise RunFolderError(f"output_dir {str(out)!r} holds a finished run (report.json): {fix}")
                if not state_path.is_file():
                    raise RunFolderError(
                        f"output_dir {str(out)!r} is not empty and was not written by an hf-methods run: {fix}"
                    )
                theirs = json.loads(state_path.read_text()).get("settings", {})
                changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                if changed:
                    shown = "; ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} now" for k in changed[:4])
                    raise RunFolderError(
                        f"output_dir {str(out)!r} holds an unfinished run with other settings ({shown}): rerun with "
                        "its settings to continue it, or pass --overwrite_output_dir true to start over"
                    )
                how = "continued"
            else:
                _clear(out)
                how = "overwritten"
        tmp = state_path.with_name(state_path.name + ".tmp")
        note = (
            "This folder holds a run that has not finished (it is running, was killed or failed): its models and "
            "report are incomplete. Rerun the same command to continue it, or pass --overwrite_output_dir true to "
            "start over. This file goes when the run finishes."
        )
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        tmp.write_text(json.dumps({"note": note, "started": started, "settings": mine}, indent=1))
        os.replace(tmp, state_path)
        return how
    except BaseException:
        release(out)
        raise


def finished(out: str | Path) -> None:
    """The run completed (report.json is written): it is no longer unfinished, and the lock goes."""
    (Path(out) / STATE).unlink(missing_ok=True)
    release(out)
