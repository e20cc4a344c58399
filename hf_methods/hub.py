"""Saving a model folder atomically with its card, and pushing folders, models and whole runs to the Hub."""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitInfo, ModelCard
from huggingface_hub.errors import HfHubHTTPError

from .cards import LIBRARY_NAME, hub_id
from .pareto import give_usual_modes

logger = logging.getLogger(__name__)


def save_model_folder(model, directory: str | Path, card: ModelCard | None = None, processor=None) -> Path:
    """`save_pretrained` (+ the `processor`'s, e.g. a tokenizer, so that `pipeline(...)` loads the folder) + README.md
    into a temporary sibling folder, then swap it in: a crash never leaves a half-written model folder behind."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save_pretrained(tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
        if card is not None:
            card.save(tmp / "README.md")
        give_usual_modes(tmp)
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _api(token=None):
    from huggingface_hub import HfApi

    from . import __version__

    return HfApi(token=token, library_name=LIBRARY_NAME, library_version=__version__)


# --- Hub faults: bounded retries, clear errors, no empty repo left, no commit of unchanged files ---------------------
# huggingface_hub 2.4 retries only some of its requests (preupload, the LFS transfer, and the commit of its Xet upload
# pipeline); repo lookups, create_repo, create_branch and the commit of `create_commit` are tried once. The Hub writes
# and reads of `push_folder` go through `_retrying`: `HUB_TRIES` tries in all, waiting RETRY_BASE_DELAY, then twice
# that, ... between them (tests set it to 0), on 5xx, 429 and connection errors only; any other 4xx fails at once.
HUB_TRIES = 4
RETRY_BASE_DELAY = 1.0  # seconds before the 2nd try; doubled before each further one
RETRY_AFTER_MAX = 60.0  # cap on a server's Retry-After
PUSH_IGNORE_PATTERNS = ["_*", "checkpoint-*", "*.bin", "*.pt", "*.pth", ".*"]


class HubUnreachableError(ConnectionError):
    """The Hub could not be reached (connection refused, DNS failure, timeout) in `HUB_TRIES` tries."""

    def __init__(self, message: str, *, endpoint: str, repo_id: str):
        super().__init__(message)
        self.endpoint, self.repo_id = endpoint, repo_id


class HubServerError(HfHubHTTPError):
    """The Hub answered 5xx or 429 to every one of `HUB_TRIES` tries. `committed` is False when nothing reached
    `repo_id`, None when that could not be checked."""

    def __init__(self, message: str, *, response, server_message=None, repo_id: str = "", committed=None):
        super().__init__(message, response=response, server_message=server_message)
        self.repo_id, self.committed = repo_id, committed


@dataclass
class PushResult(CommitInfo):
    """What `push_folder` returns: huggingface_hub's `CommitInfo` (a str: the commit url) of the repo's head after the
    push, plus `committed` (False when the repo already had these files and no commit was made) and `created_repo`."""

    committed: bool = True
    created_repo: bool = False

    def __reduce__(self):
        args = (self.commit_url, self.commit_message, self.commit_description, self.oid, self._endpoint, self.pr_url)
        return self.__class__, (*args, self.committed, self.created_repo)


def _transient(err: BaseException) -> bool:
    """A failure worth another try: a 5xx or 429 answer, or a connection that failed or broke off."""
    if isinstance(err, HfHubHTTPError):
        status = getattr(err.response, "status_code", None) or 0
        return status >= 500 or status == 429
    import httpx2

    return isinstance(err, (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError))


def _delay(attempt: int, err: BaseException) -> float:
    delay = RETRY_BASE_DELAY * 2 ** (attempt - 1)
    response = getattr(err, "response", None)
    retry_after = response.headers.get("Retry-After", "") if response is not None else ""
    if retry_after.strip().isdigit():
        delay = max(delay, min(float(retry_after), RETRY_AFTER_MAX))
    return delay


def _short(err: BaseException) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    return f"HTTP {status}" if status else f"{type(err).__name__}: {err}"


def _retrying(call, what: str):
    """`call(attempt)` until it succeeds, `HUB_TRIES` tries at most; only transient failures are tried again."""
    for attempt in range(1, HUB_TRIES + 1):
        try:
            return call(attempt)
        except Exception as err:
            if attempt == HUB_TRIES or not _transient(err):
                raise
            delay = _delay(attempt, err)
            logger.warning(f"{what} failed ({_short(err)}); try {attempt + 1} of {HUB_TRIES} in {delay:.0f}s")
            time.sleep(delay)


@dataclass
class _RepoState:
    exists: bool
    sha: str | None  # head of the branch pushed to; None when the repo or the branch is missing
    files: dict  # path -> RepoSibling (size, blob_id, lfs.sha256)


def _repo_state(api, repo_id: str, revision: str | None) -> _RepoState:
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except RevisionNotFoundError:
        return _RepoState(True, None, {})
    except RepositoryNotFoundError:
        return _RepoState(False, None, {})
    return _RepoState(True, info.sha, {s.rfilename: s for s in info.siblings or ()})


def _upload_files(folder: Path) -> dict[str, Path]:
    """{path in the repo: local file} of what `push_folder` uploads from `folder`."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    paths = sorted(p.relative_to(folder).as_posix() for p in folder.glob("**/*") if p.is_file())
    ignore = PUSH_IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS  # as `upload_folder` did
    return {p: folder / p for p in filter_repo_objects(paths, ignore_patterns=ignore)}


def _same_content(local: Path, remote) -> bool:
    """Whether the Hub's file `remote` (a RepoSibling with files metadata) holds the bytes of `local`: compared by
    sha256 for LFS files, by git blob id for the others; sizes first, so a changed file is rarely read."""
    size = local.stat().st_size
    if remote is None or remote.size != size:
        return False
    lfs = remote.lfs
    if lfs:
        with open(local, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest() == lfs["sha256"]
    if not remote.blob_id:
        return False
    blob = hashlib.sha1(b"blob %d\0" % size)
    with open(local, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            blob.update(chunk)
    return blob.hexdigest() == remote.blob_id


def _has_files(files: dict[str, Path], state: _RepoState) -> bool:
    """Whether the branch `state` describes already holds every file of `files`, byte for byte."""
    return state.sha is not None and all(_same_content(local, state.files.get(p)) for p, local in files.items())


def _result(api, repo_id: str, sha: str, message: str, *, committed: bool, created: bool) -> PushResult:
    return PushResult(
        commit_url=f"{api.endpoint}/{repo_id}/commit/{sha}",
        commit_message=message,
        commit_description="",
        oid=sha,
        _endpoint=api.endpoint,
        committed=committed,
        created_repo=created,
    )


# push_run collects here what the pushes of one run did: [(repo id, PushResult)]
_RUN_PUSHES: contextvars.ContextVar[list | None] = contextvars.ContextVar("hf_methods_run_pushes", default=None)


def _done(repo_id: str, result: PushResult) -> PushResult:
    pushes = _RUN_PUSHES.get()
    if pushes is not None:
        pushes.append((repo_id, result))
    return result


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> PushResult:
    """Upload a saved model folder (weights, config, README.md card), a PEFT adapter folder (adapter_config.json) or a
    diffusers pipeline folder (model_index.json) to `repo_id` in one commit.

    Pickles (`*.bin`, `*.pt`, `*.pth`) and private files (`_*`, `checkpoint-*`, `.*`) are never uploaded: hf-methods
    models are safetensors only. The repo (and the branch `revision`) is created when missing, right before the commit;
    if the commit then fails, the repo is deleted again while still empty, so a failed push leaves no empty repo. When
    the branch already holds these very files nothing is committed (`result.committed` is False): pushing again after
    a failure is safe. 5xx / 429 answers and connection errors are retried (`HUB_TRIES`); in the end they raise
    `HubServerError` / `HubUnreachableError` saying whether anything reached the repo. 401 / 403 raise PermissionError.
    """
    folder = Path(folder)
    if not any((folder / name).is_file() for name in ("config.json", "adapter_config.json", "model_index.json")):
        raise FileNotFoundError(
            f"{folder} is not a saved model, adapter or pipeline folder (no config.json, adapter_config.json or "
            "model_index.json); "
            "save_pretrained it first."
        )
    from huggingface_hub import CommitOperationAdd

    api = _api(token)
    files = _upload_files(folder)
    message = commit_message or f"Upload {folder.name} with hf-methods"
    stage, base, created = "read", None, False  # base: the branch before the commit

    def commit(attempt: int) -> PushResult:
        if attempt > 1:  # the last try may have gone through with its answer lost: never commit the files twice
            now = _repo_state(api, repo_id, revision)
            if _has_files(files, now):
                return _result(api, repo_id, now.sha, message, committed=now.sha != base.sha, created=created)
        operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(local)) for p, local in files.items()]
        info = api.create_commit(repo_id, operations, commit_message=message, revision=revision)
        return _result(api, repo_id, info.oid, message, committed=info.oid != base.sha, created=created)

    def look_up(_):
        return _repo_state(api, repo_id, revision)

    try:
        base = _retrying(look_up, f"Looking up {repo_id} on the Hub")
        if _has_files(files, base):
            logger.info(f"{repo_id} already has the files of {folder}: nothing to commit")
            return _done(repo_id, _result(api, repo_id, base.sha, message, committed=False, created=False))
        if not base.exists:
            stage = "create"
            created = _retrying(lambda _: _create_repo(api, repo_id, private), f"Creating {repo_id}")
        if revision is not None and base.sha is None:
            stage = "branch"
            _retrying(
                lambda _: api.create_branch(repo_id, branch=revision, exist_ok=True),
                f"Creating branch {revision!r} of {repo_id}",
            )
        if base.sha is None:  # a new repo or branch: its head now, to tell later whether a commit reached it
            stage = "read"
            base = _retrying(look_up, f"Looking up {repo_id} on the Hub")
        stage = "commit"
        return _done(repo_id, _retrying(commit, f"The commit to {repo_id}"))
    except Exception as err:
        return _done(repo_id, _push_failed(err, api, repo_id, revision, files, message, stage, base, created))


def _create_repo(api, repo_id: str, private: bool | None) -> bool:
    """Create `repo_id`; False when it exists already (e.g. made by a try whose answer was lost)."""
    try:
        api.create_repo(repo_id, private=private, exist_ok=False)
    except HfHubHTTPError as err:
        if getattr(err.response, "status_code", None) == 409:
            return False
        raise
    return True


def _push_failed(err, api, repo_id, revision, files, message, stage, base, created) -> PushResult:
    """After a failed `push_folder`: find out what reached the Hub (one look, no retries), delete the repo the push
    created while it is still empty, and raise the error that says so (or return, when the files did arrive)."""
    state = None
    if stage == "commit" or created:
        try:
            state = _repo_state(api, repo_id, revision)
        except Exception:  # the Hub is still failing: say what is known
            state = None
    if stage == "commit" and state is not None and _has_files(files, state):  # it went through, its answer was lost
        return _result(api, repo_id, state.sha, message, committed=state.sha != base.sha, created=created)
    if stage != "commit":
        committed = False  # no commit was sent
    else:
        committed = None if state is None else state.sha != base.sha
    cleanup = ""
    if created and committed is False and (state is None or set(state.files) <= {".gitattributes"}):
        try:
            _retrying(lambda _: api.delete_repo(repo_id, missing_ok=True), f"Deleting the empty repo {repo_id}")
            cleanup = " and the empty repo this push had created was deleted again"
        except Exception:
            cleanup = f" but the empty repo this push created is left (delete it: hf repos delete {repo_id})"
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, HfHubHTTPError) and status in (401, 403):
        raise PermissionError(
            f"the Hub refused to write {repo_id!r} (HTTP {status}): the token is missing or wrong, or has no write "
            "access. Log in with `hf auth login` or set HF_TOKEN to a write token."
        ) from err
    if not _transient(err):
        if cleanup and isinstance(err, HfHubHTTPError):
            err.append_to_message(f"\n(hf-methods: nothing was committed to {repo_id}{cleanup}.)")
        raise err
    outcome = {
        False: f"nothing was committed to {repo_id}{cleanup}",
        True: f"{repo_id} changed meanwhile (another commit), still without all these files",
        None: f"whether the commit reached {repo_id} could not be checked",
    }[committed]
    again = "push again (files already on the Hub are not committed twice)"
    if isinstance(err, HfHubHTTPError):
        doing = {
            "read": f"looking up {repo_id}",
            "create": f"creating {repo_id}",
            "branch": f"creating branch {revision!r} of {repo_id}",
            "commit": f"the commit to {repo_id}",
        }[stage]
        raise HubServerError(
            f"the Hub at {api.endpoint} answered HTTP {status} to {doing} {HUB_TRIES} times, so {outcome}; "
            f"when it is back, {again}.",
            response=err.response,
            server_message=getattr(err, "server_message", None),
            repo_id=repo_id,
            committed=committed,
        ) from err
    raise HubUnreachableError(
        f"cannot reach the Hub at {api.endpoint} ({type(err).__name__}: {err}; {HUB_TRIES} tries), so {outcome}; "
        f"check HF_ENDPOINT and your network connection (or proxy), then {again}.",
        endpoint=api.endpoint,
        repo_id=repo_id,
    ) from err


def push_model(model, repo_id: str, card: ModelCard | None = None, processor=None, **push_kwargs):
    """Save `model` (+ `processor`, + `card` as README.md) into a temporary folder and push it in one commit;
    nothing is written beside the caller's files, and a failed push leaves no trace locally."""
    with tempfile.TemporaryDirectory(prefix="hf_methods_push_") as tmp:
        model.save_pretrained(tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
        if card is not None:
            card.save(Path(tmp) / "README.md")
        return push_folder(tmp, repo_id, **push_kwargs)


def _card_for_hub(folder: Path, repo_id: str) -> ModelCard | None:
    """The card saved in `folder` with its usage snippets loading `repo_id` instead of the folder's absolute path."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    return ModelCard(readme.read_text(encoding="utf-8").replace(str(folder.resolve()), repo_id))


def push_saved_model(folder: str | Path, repo_id: str, card: ModelCard | None = None, **push_kwargs):
    """Push a saved model folder as it is (weights, config, files a trainer saved beside them), with `card` as its
    README.md instead of the one on disk (e.g. re-rendered so its links point at the Hub repos). The folder on disk is
    not changed."""
    folder = Path(folder)
    if card is None:
        return push_folder(folder, repo_id, **push_kwargs)
    with tempfile.TemporaryDirectory(prefix="hf_methods_push_") as tmp:
        copy = Path(tmp) / folder.name
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("README.md"))
        card.save(copy / "README.md")
        return push_folder(copy, repo_id, **push_kwargs)


class RunPush(dict):
    """What `push_run` returns: {folder name: repo id}, plus `results`: {repo id: PushResult} of every repo the push
    wrote to (`committed` False where the repo already had those files)."""

    results: dict[str, PushResult]


def push_run(
    out_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    token: str | None = None,
) -> RunPush:
    """Push what an `hf-methods` run wrote to `out_dir`, laid out by its method (`report.json`'s "method", see
    `hf_methods.registry.Method.push`): e.g. a learngene to `repo_id` and each descendant to `<repo_id>-depth-<D>`.
    A teacher the run trained goes to `<repo_id>-teacher` first, so the cards' ancestry links point at it.
    Returns {folder name: repo id} (a `RunPush`).

    Each repo gets one commit, or none when it already has the files: the Hub has no transaction over several repos,
    so when a push fails half-way (`HubServerError`, `HubUnreachableError`, whose message lists the repos already
    pushed), pushing the run again finishes it without committing anything twice."""
    import json

    from . import registry

    out_dir = Path(out_dir)
    report = out_dir / "report.json"
    if not report.is_file():
        raise FileNotFoundError(f"{out_dir} has no report.json: give the output_dir of an `hf-methods` run.")
    if not hub_id(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}.")
    from .run_folder import STATE

    if (out_dir / STATE).is_file():
        raise ValueError(
            f"the run in {out_dir} is unfinished (killed before it ended): rerun its command to finish it, then push."
        )
    results = json.loads(report.read_text())
    name = results.get("method")
    # everything the report names must be there before anything is uploaded
    expected = [c["path"] for c in results.get("choices", []) if isinstance(c, dict) and c.get("path")]
    expected += ["learngene"] if name in ("TLEG", "SWS") else []
    missing = sorted({p for p in expected if not (out_dir / p).is_dir()})
    if missing:
        raise FileNotFoundError(
            f"{out_dir}/report.json names model folders that are missing ({', '.join(missing)}): the folder is "
            "incomplete or was changed after the run; rerun the recipe with --overwrite_output_dir true."
        )
    method = registry.methods().get(name)
    if method is None or method.push is None:
        known = sorted(m.name for m in registry.methods().values() if m.push)
        raise ValueError(
            f"{out_dir} is a run of {name!r}, which `hf-methods push` cannot lay out; it pushes runs "
            f"of {known}. Push its models one by one with `model.push_to_hub(...)`."
        )
    kw = dict(private=private, revision=revision, token=token)
    pushed = RunPush()
    pushes: list[tuple[str, PushResult]] = []
    reset = _RUN_PUSHES.set(pushes)
    try:
        teacher = results.get("teacher")
        if (out_dir / "teacher").is_dir() and isinstance(teacher, dict) and not teacher.get("hub_id"):
            target = f"{repo_id}-teacher"
            card = _card_for_hub(out_dir / "teacher", target)
            push_saved_model(out_dir / "teacher", target, card, commit_message="Upload the teacher", **kw)
            teacher["hub_id"] = pushed["teacher"] = target
        pushed.update(registry.resolve(method.push)(out_dir, repo_id, results, **kw))
    except (HubServerError, HubUnreachableError) as err:  # what is on the Hub, and how to finish
        command = f"hf-methods push {out_dir} --repo-id {repo_id}" + " --private" * bool(private)
        command += f" --revision {revision}" if revision else ""
        note = f" Pushed before it: {', '.join(repo for repo, _ in pushes)}." if pushes else ""
        note += f" To finish the push: `{command}` (it skips what is already there)."
        err.args = (err.args[0] + note, *err.args[1:])
        raise
    finally:
        _RUN_PUSHES.reset(reset)
    pushed.results = dict(pushes)
    return pushed
