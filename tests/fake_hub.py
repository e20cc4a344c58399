"""An in-process fake of the Hugging Face Hub HTTP API, for offline tests of Hub integration.

`FakeHub` runs a stdlib `ThreadingHTTPServer` on 127.0.0.1 (random port) in a daemon thread and answers the routes
that huggingface_hub 2.4 (and transformers and datasets on top of it) use to create model and dataset repos, push
commits and download files. Tests therefore drive the *real* client code (`HfApi`, `hf_hub_download`,
`snapshot_download`, `push_to_hub`, `from_pretrained`, `Dataset.push_to_hub`, `DatasetCard.push_to_hub`,
`datasets.load_dataset`) over real HTTP.

Emulated (model and dataset repos "ns/name", each kind in its own namespace: `repos` holds the model repos,
`dataset_repos` the dataset repos; all state in memory):
- `POST /api/repos/create` (`type` "model" or "dataset"; 409 with the repo url when it exists, as the Hub does),
  `DELETE /api/repos/delete`, `GET /api/whoami-v2`, `POST /api/validate-yaml` (always valid);
- repo info `GET|HEAD /api/{models,datasets}/{repo}[/revision/{rev}]`, `GET .../tree/{rev}[/{path}]`,
  `POST .../paths-info/{rev}`;
- uploads: `POST .../preupload/{rev}` (LFS for *.safetensors/.bin/.pt/.pth, for *.parquet/.arrow in dataset repos,
  and files > 10 MB), the legacy git-LFS batch API `POST [/datasets]/{repo}.git/info/lfs/objects/batch` (basic
  transfer, single PUT + verify on this server; used when `HF_HUB_DISABLE_XET=1`), `POST .../commit/{rev}` (NDJSON:
  file, lfsFile, deletedFile, deletedFolder), and `POST .../branch/{branch}`;
- downloads: `HEAD|GET /{repo}/resolve/{rev}/{path}` (dataset repos: `/datasets/{repo}/resolve/...`) with
  `X-Repo-Commit`, `ETag`, `X-Linked-Etag`/`X-Linked-Size` (LFS files) and `X-Error-Code` (RepoNotFound /
  RevisionNotFound / EntryNotFound) on errors;
- bearer-token auth when `tokens` is given (unknown tokens are rejected on every route, like the real Hub; writes and
  private repos need a valid one), `reject_all_with_401`, and a request log `requests`;
- faults: `fail_next_commits = N` answers the next N commit requests with `commit_failure_status` (500 unless set;
  nothing applied), `fail_commits_to[repo_id] = N` does so for the next N commits to one repo,
  `lose_next_commit_answers = N` applies the next N commits but answers them with that status (an answer lost on
  the way back, e.g. a gateway timeout), and `stop()` takes the server down (connection refused on its port);
  `commits(repo_id)` (a branch's history) and `commit_requests(repo_id)` count commits and commit attempts (each
  helper takes `repo_type="dataset"` for a dataset repo).

Not emulated: Xet storage (set `HF_HUB_DISABLE_XET=1`), multipart LFS uploads, space repos, buckets, the dataset
viewer's routes (`/api/datasets/{repo}/parquet`, the `refs/convert/parquet` branch), pull requests, tags, deletion of
branches, pagination, gated repos, redirects to a CDN, Range requests. `datasets` reads `HF_ENDPOINT` and the offline
flag into `datasets.config` at import: a test that pushes or loads a dataset repo with `datasets` also applies
`datasets_endpoint_patches(hub.endpoint)`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
DATASET_LFS_SUFFIXES = LFS_SUFFIXES + (".parquet", ".arrow")  # a new dataset repo's .gitattributes adds these
LFS_MIN_SIZE = 10 * 1024 * 1024
USER = "tester"  # the namespace of `create_repo("name")` and the user behind every valid token
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"  # the real Hub's wording for a bad token
GITATTRIBUTES = b"".join(b"*%s filter=lfs diff=lfs merge=lfs -text\n" % s.encode() for s in LFS_SUFFIXES)
DATASET_GITATTRIBUTES = b"".join(
    b"*%s filter=lfs diff=lfs merge=lfs -text\n" % s.encode() for s in DATASET_LFS_SUFFIXES
)
# URL part of each repo kind ("models" in /api/models/..., "datasets" in /api/datasets/... and /datasets/...) -> the
# `type` huggingface_hub sends to /api/repos/create and /api/repos/delete
KINDS = {"models": "model", "datasets": "dataset"}


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    lfs: frozenset[str] = frozenset()  # paths stored as LFS objects
    date: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, list[Commit]]  # branch -> history, oldest first
    kind: str = "models"  # "models" or "datasets" (the URL part)

    def resolve(self, rev: str) -> Commit | None:
        if rev in self.branches:
            return self.branches[rev][-1]
        return next((c for h in self.branches.values() for c in h if c.oid == rev), None)


def datasets_endpoint_patches(endpoint: str) -> list[tuple[object, str, object]]:
    """`(object, attribute, value)` triples that point `datasets` (which copies `HF_ENDPOINT` and the offline flag into
    `datasets.config` at import) at `endpoint`, for `monkeypatch.setattr` beside the `fake_hub` fixture's own."""
    import datasets.config

    return [
        (datasets.config, "HF_ENDPOINT", endpoint),
        (datasets.config, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"),
        (datasets.config, "HF_HUB_OFFLINE", False),
    ]


class Reply(Exception):
    """An HTTP answer, raised from anywhere in a route handler."""

    def __init__(self, status: int, body=None, headers: dict | None = None):
        self.status, self.body, self.headers = status, body, dict(headers or {})


def error(status: int, message: str, code: str | None = None, **headers) -> Reply:
    headers["X-Error-Message"] = message
    if code:
        headers["X-Error-Code"] = code
    return Reply(status, {"error": message}, headers)


class FakeHub:
    def __init__(self, tokens=()):
        self.tokens = set(tokens)
        self.repos: dict[str, Repo] = {}  # model repos
        self.dataset_repos: dict[str, Repo] = {}
        self.lfs_store: dict[str, bytes] = {}  # sha256 -> content (uploaded LFS objects)
        self.requests: list[tuple[str, str]] = []
        self.reject_all_with_401 = False
        self.fail_next_commits = 0
        self.fail_commits_to: dict[str, int] = {}
        self.lose_next_commit_answers = 0
        self.commit_failure_status = 500
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # lifecycle
    def start(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="FakeHub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def store(self, repo_type: str | None = "model") -> dict[str, Repo]:
        """The repos of one kind: `repos` (model) or `dataset_repos` (dataset)."""
        if repo_type in (None, "model", "models"):
            return self.repos
        if repo_type in ("dataset", "datasets"):
            return self.dataset_repos
        raise ValueError(f"FakeHub has model and dataset repos, not {repo_type!r} ones")

    # helpers for tests
    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The files of `repo_id` at a branch or commit oid (raises KeyError if unknown)."""
        commit = self.store(repo_type)[repo_id].resolve(revision)
        if commit is None:
            raise KeyError(revision)
        return dict(commit.files)

    def routes_used(self, method: str | None = None) -> list[str]:
        return [p for m, p in self.requests if method is None or m == method]

    def commits(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[Commit]:
        """The history of a branch of `repo_id`, oldest first ("initial commit" from create_repo included)."""
        return list(self.store(repo_type)[repo_id].branches[revision])

    def commit_requests(self, repo_id: str, repo_type: str = "model") -> int:
        """How many commit requests reached `repo_id` (answered or failed)."""
        kind = "datasets" if repo_type in ("dataset", "datasets") else "models"
        return sum(m == "POST" and p.startswith(f"/api/{kind}/{repo_id}/commit/") for m, p in self.requests)

    # state changes (called with the lock held)
    def _new_commit(self, parent: Commit | None, message: str, files: dict, lfs) -> Commit:
        seed = f"{parent and parent.oid}|{message}|{next(self._counter)}|" + "|".join(
            f"{p}:{git_blob_oid(c)}" for p, c in sorted(files.items())
        )
        return Commit(hashlib.sha1(seed.encode()).hexdigest(), parent and parent.oid, message, files, frozenset(lfs))

    def _create_repo(self, repo_id: str, private: bool, kind: str = "models") -> Repo:
        attributes = DATASET_GITATTRIBUTES if kind == "datasets" else GITATTRIBUTES
        first = self._new_commit(None, "initial commit", {".gitattributes": attributes}, ())
        self.store(kind)[repo_id] = repo = Repo(repo_id, private, {"main": [first]}, kind)
        return repo


_REPO = r"/(?P<ns>[^/]+)/(?P<name>[^/]+)"
_API = r"/api/(?P<kind>models|datasets)"  # repo routes of both kinds
_PREFIX = r"(?:/(?P<kind>datasets))?"  # git and download routes: "/datasets" before a dataset repo, nothing for a model
# (method, path regex, route_* handler name, needs a valid token when tokens are configured)
_ROUTES = [
    ("POST", r"/api/repos/create", "create_repo", True),
    ("DELETE", r"/api/repos/delete", "delete_repo", True),
    ("GET", r"/api/whoami-v2", "whoami", True),
    ("POST", r"/api/validate-yaml", "validate_yaml", False),
    ("GET", _API + _REPO + r"(?:/revision/(?P<rev>[^/]+))?", "repo_info", False),
    ("GET", _API + _REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree", False),
    ("POST", _API + _REPO + r"/paths-info/(?P<rev>[^/]+)", "paths_info", False),
    ("POST", _API + _REPO + r"/preupload/(?P<rev>[^/]+)", "preupload", True),
    ("POST", _API + _REPO + r"/commit/(?P<rev>[^/]+)", "commit", True),
    ("POST", _API + _REPO + r"/branch/(?P<branch>[^/]+)", "create_branch", True),
    ("POST", _PREFIX + _REPO + r"\.git/info/lfs/objects/batch", "lfs_batch", True),
    ("POST", _PREFIX + _REPO + r"\.git/info/lfs/objects/verify", "lfs_verify", False),
    ("PUT", r"/_lfs_upload/(?P<oid>[0-9a-f]{64})", "lfs_put", False),  # a "presigned" URL: no auth
    ("GET", _PREFIX + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve", False),
]
_ROUTES = [(method, re.compile(pattern + "$"), name, write) for method, pattern, name, write in _ROUTES]


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub  # set by FakeHub.start
    server_version = "FakeHub/1.0"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    # plumbing
    def _dispatch(self) -> None:
        hub, method, url = self.hub, self.command, urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.body = self._read_body()  # always drain the request before answering
        try:
            with hub._lock:
                hub.requests.append((method, url.path))
                if hub.reject_all_with_401:
                    raise error(401, INVALID_CREDENTIALS)
                token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip() or None
                if hub.tokens and token is not None and token not in hub.tokens:
                    raise error(401, INVALID_CREDENTIALS)
                self.authorized = not hub.tokens or token is not None
                for route_method, regex, name, write in _ROUTES:
                    match = regex.match(url.path)
                    if match and route_method == method.replace("HEAD", "GET"):
                        if write and not self.authorized:
                            raise error(401, "Authentication required: pass a valid token (Authorization: Bearer)")
                        args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                        raise Reply(200, getattr(self, "route_" + name)(**args))
                raise error(404, f"FakeHub: no route for {method} {url.path}")
        except Reply as reply:
            self._send(reply)
        except Exception as exc:  # a bug or a malformed request: answer (no retries on 4xx) instead of hanging up
            self._send(error(400, f"FakeHub could not handle {method} {url.path}: {exc!r}"))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip(), 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, reply: Reply) -> None:
        body = reply.body
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            reply.headers.setdefault("Content-Type", "application/json")
        self.send_response(reply.status)
        for key, value in reply.headers.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise error(400, "Malformed JSON body") from None

    def _repo(self, ns: str, name: str, kind: str = "models") -> Repo:
        repo = self.hub.store(kind).get(f"{ns}/{name}")
        if repo is None:
            raise error(404, "Repository not found", "RepoNotFound")
        if repo.private and not self.authorized:  # the Hub hides private repos from anonymous users
            raise error(401, "Invalid username or password.", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def _entry(self, commit: Commit, path: str) -> dict:
        content = commit.files[path]
        if path in commit.lfs:
            sha256 = hashlib.sha256(content).hexdigest()
            pointer = lfs_pointer(sha256, len(content))
            lfs = {"oid": sha256, "size": len(content), "pointerSize": len(pointer)}
            return {"type": "file", "path": path, "size": len(content), "oid": git_blob_oid(pointer), "lfs": lfs}
        return {"type": "file", "path": path, "size": len(content), "oid": git_blob_oid(content)}

    @staticmethod
    def _folders(commit: Commit) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in commit.files for i in range(1, p.count("/") + 1)}

    def _folder_entry(self, path: str) -> dict:
        return {"type": "directory", "path": path, "size": 0, "oid": hashlib.sha1(path.encode()).hexdigest()}

    # routes
    def _kind(self, payload: dict) -> str:
        """The URL part ("models" / "datasets") of the repo type a create/delete request names."""
        repo_type = payload.get("type") or "model"
        kind = next((k for k, t in KINDS.items() if t == repo_type), None)
        if kind is None:
            raise error(400, f"FakeHub only supports model and dataset repos, not {repo_type!r} ones")
        return kind

    def route_create_repo(self) -> dict:
        payload = self._json()
        kind = self._kind(payload)
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        url = f"{self.hub.endpoint}/{'datasets/' if kind == 'datasets' else ''}{repo_id}"
        if repo_id in self.hub.store(kind):
            raise Reply(409, {"error": f"You already created this {KINDS[kind]} repo", "url": url})
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        self.hub._create_repo(repo_id, private, kind)
        return {"url": url, "name": repo_id, "id": repo_id}

    def route_delete_repo(self) -> dict:
        payload = self._json()
        kind = self._kind(payload)
        repo = self._repo(payload.get("organization") or USER, payload["name"], kind)
        del self.hub.store(kind)[repo.repo_id]
        return {}

    def route_whoami(self) -> dict:
        role = {"displayName": "fake", "role": "write"}
        return {
            "type": "user",
            "id": "0" * 24,
            "name": USER,
            "fullname": "Test User",
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": role},
        }

    def route_validate_yaml(self) -> dict:
        return {"errors": [], "warnings": []}

    def route_repo_info(self, ns, name, kind, rev="main") -> dict:
        repo = self._repo(ns, name, kind)
        commit = self._commit(repo, rev)
        with_blobs = self.query.get("blobs", "").lower() == "true"
        siblings = [{"rfilename": path} for path in sorted(commit.files)]
        for sibling in siblings if with_blobs else ():  # `files_metadata=True`
            entry = self._entry(commit, sibling["rfilename"])
            sibling.update(size=entry["size"], blobId=entry["oid"])
            if "lfs" in entry:
                lfs = entry["lfs"]
                sibling["lfs"] = {"size": lfs["size"], "sha256": lfs["oid"], "pointerSize": lfs["pointerSize"]}
        first = repo.branches["main"][0]
        model_only = {"modelId": repo.repo_id} if kind == "models" else {}
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            **model_only,
            "author": ns,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": first.date,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }

    def route_tree(self, ns, name, kind, rev, path="") -> list:
        commit = self._commit(self._repo(ns, name, kind), rev)
        path = path.strip("/")
        folders = self._folders(commit)
        if path and path not in folders:
            raise error(404, f"Entry not found: {path}", "EntryNotFound")
        prefix = path + "/" if path else ""
        recursive = self.query.get("recursive", "false").lower() == "true"

        def wanted(p):
            return p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])

        entries = [self._folder_entry(p) for p in sorted(folders) if wanted(p)]
        return entries + [self._entry(commit, p) for p in sorted(commit.files) if wanted(p)]

    def route_paths_info(self, ns, name, kind, rev) -> list:
        commit = self._commit(self._repo(ns, name, kind), rev)
        paths = parse_qs(self.body.decode()).get("paths", [])  # the client sends a form: paths=a&paths=b&expand=..
        folders = self._folders(commit)
        out = []
        for path in (p.strip("/") for p in paths):
            if path in commit.files:
                out.append(self._entry(commit, path))
            elif path in folders:
                out.append(self._folder_entry(path))
        return out

    def route_preupload(self, ns, name, kind, rev) -> dict:
        commit = self._commit(self._repo(ns, name, kind), rev)
        suffixes = DATASET_LFS_SUFFIXES if kind == "datasets" else LFS_SUFFIXES
        files = []
        for f in self._json().get("files", []):
            lfs = f["path"].endswith(suffixes) or f.get("size", 0) > LFS_MIN_SIZE
            remote = None
            if f["path"] in commit.files:  # lets the client skip unchanged files, like the Hub
                content = commit.files[f["path"]]
                lfs_remote = f["path"] in commit.lfs
                remote = hashlib.sha256(content).hexdigest() if lfs_remote else git_blob_oid(content)
            files.append(
                {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": remote}
            )
        return {"files": files, "commitOid": commit.oid}

    def route_create_branch(self, ns, name, kind, branch) -> dict:
        repo = self._repo(ns, name, kind)
        if branch in repo.branches:
            raise error(409, f"Reference already exists: refs/heads/{branch}")
        start = self._commit(repo, self._json().get("startingPoint") or "main")
        history = next(h for h in repo.branches.values() if start in h)
        repo.branches[branch] = history[: history.index(start) + 1]
        return {}

    def route_lfs_batch(self, ns, name, kind="models") -> dict:
        self._repo(ns, name, kind)
        payload = self._json()
        if payload.get("operation") != "upload":
            raise error(400, "FakeHub only supports the LFS 'upload' operation")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], obj["size"]
            if oid in self.hub.lfs_store:
                objects.append({"oid": oid, "size": size, "authenticated": True})  # already there: no actions
                continue
            upload = {"href": f"{self.hub.endpoint}/_lfs_upload/{oid}?size={size}", "header": {}}
            prefix = "/datasets" if kind == "datasets" else ""
            verify = {"href": f"{self.hub.endpoint}{prefix}/{ns}/{name}.git/info/lfs/objects/verify", "header": {}}
            objects.append(
                {"oid": oid, "size": size, "authenticated": True, "actions": {"upload": upload, "verify": verify}}
            )
        raise Reply(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def route_lfs_put(self, oid) -> bytes:
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise error(400, "Uploaded content does not match its sha256 oid")
        if "size" in self.query and int(self.query["size"]) != len(self.body):
            raise error(400, "Uploaded content does not match the announced size")
        self.hub.lfs_store[oid] = self.body
        return b""

    def route_lfs_verify(self, ns, name, kind="models") -> dict:
        obj = self._json()
        content = self.hub.lfs_store.get(obj.get("oid"))
        if content is None or len(content) != obj.get("size"):
            raise error(404, f"LFS object {obj.get('oid')} not found")
        return {}

    def route_commit(self, ns, name, kind, rev) -> dict:
        repo = self._repo(ns, name, kind)
        if self.hub.fail_next_commits > 0:  # injected failure: the body was read, nothing is applied
            self.hub.fail_next_commits -= 1
            raise error(self.hub.commit_failure_status, "Internal Error (injected by FakeHub.fail_next_commits)")
        if self.hub.fail_commits_to.get(repo.repo_id, 0) > 0:
            self.hub.fail_commits_to[repo.repo_id] -= 1
            raise error(self.hub.commit_failure_status, "Internal Error (injected by FakeHub.fail_commits_to)")
        if self.query.get("create_pr"):
            raise error(400, "FakeHub does not support pull requests")
        if rev not in repo.branches:
            raise error(404, f"Invalid rev id: {rev} (commits go to a branch)", "RevisionNotFound")
        head = repo.branches[rev][-1]
        files, lfs, header = dict(head.files), set(head.lfs), {}
        for line in filter(None, (raw.strip() for raw in self.body.splitlines())):
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            path = value.get("path", "").strip("/")
            if key == "header":
                header = value
            elif key == "file":
                files[path] = base64.b64decode(value["content"])
                lfs.discard(path)
            elif key == "lfsFile":
                content = self.hub.lfs_store.get(value["oid"])
                if content is None or ("size" in value and value["size"] != len(content)):
                    raise error(422, f"LFS object {value['oid']} for '{path}' was not uploaded")
                files[path] = content
                lfs.add(path)
            elif key == "deletedFile":
                if path not in files:
                    raise error(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
                lfs.discard(path)
            elif key == "deletedFolder":
                for p in [p for p in files if p.startswith(path + "/")]:
                    del files[p]
                    lfs.discard(p)
            else:
                raise error(400, f"Unknown commit operation key: {key!r}")
        parent = header.get("parentCommit")
        if parent is not None and parent != head.oid:
            raise error(412, "A commit has happened since. Please refresh and try again.")
        message = "\n\n".join(filter(None, (header.get("summary"), header.get("description"))))
        commit = self.hub._new_commit(head, message, files, lfs)
        repo.branches[rev].append(commit)
        if self.hub.lose_next_commit_answers > 0:  # injected: applied, but the client is told it failed
            self.hub.lose_next_commit_answers -= 1
            raise error(self.hub.commit_failure_status, "Error after the commit (injected: lose_next_commit_answers)")
        prefix = "datasets/" if kind == "datasets" else ""
        return {
            "commitUrl": f"{self.hub.endpoint}/{prefix}{repo.repo_id}/commit/{commit.oid}",
            "commitOid": commit.oid,
            "pullRequestUrl": None,
        }

    def route_resolve(self, ns, name, rev, path, kind="models") -> bytes:
        commit = self._commit(self._repo(ns, name, kind), rev)
        if path not in commit.files:
            raise error(404, "Entry not found", "EntryNotFound", **{"X-Repo-Commit": commit.oid})
        content = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid, "Content-Type": "application/octet-stream", "Accept-Ranges": "none"}
        if path in commit.lfs:
            sha256 = hashlib.sha256(content).hexdigest()
            headers.update({"ETag": f'"{sha256}"', "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": len(content)})
        else:
            headers["ETag"] = f'"{git_blob_oid(content)}"'
        raise Reply(200, content, headers)
