"""A local stand-in for the Hugging Face Hub: the part of its HTTP API that `huggingface_hub` and
transformers use to push and pull, served on 127.0.0.1 from memory.

Point the real client at it with `HF_ENDPOINT=http://127.0.0.1:<port>` (read when huggingface_hub is
imported, so set it in the environment of a fresh process). Speaks:

- `POST /api/repos/create`, `POST /api/{type}s/{repo}/branch/{branch}`
- `POST /api/{type}s/{repo}/preupload/{rev}`: files ending in `LFS_SUFFIXES` (dataset shards) are "lfs",
  every other file "regular" (its contents travel in the commit)
- LFS (basic transfer, what `datasets.Dataset.push_to_hub` needs: it deletes each shard's temporary file
  after `preupload_lfs_files`): `POST /[{type}s/]{repo}.git/info/lfs/objects/batch` answers an upload
  action to `PUT /lfs-upload/{sha256}`; start the client with `HF_HUB_DISABLE_XET=1` (no Xet server here)
- `POST /api/{type}s/{repo}/commit/{rev}` (NDJSON: header, file, lfsFile, deletedFile, deletedFolder)
- `GET /api/{type}s/{repo}[/revision/{rev}]` (info with `sha` and `siblings`), `.../tree/{rev}[/{path}]`,
  `POST .../paths-info/{rev}`
- `HEAD|GET /[{type}s/]{repo}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag`, `Content-Length`, and
  `Range: bytes=a-b` (206; `HfFileSystem` reads parquet footers and streams that way)
- `POST /api/validate-yaml` (the card's front matter must parse; `model-index` entries need `results`)
- `GET /api/whoami-v2`

Writes need an `Authorization` header (any token); private repositories are hidden from requests
without one, as on the Hub. Errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound)
so the client raises its usual exceptions. Every request is logged in `hub.requests` (method, path).

Run it alone: `python tests/hub_stand_in.py --port 8765`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

REPO_TYPES = ("model", "dataset", "space")
#: Files the stand-in asks to be uploaded through LFS (the real Hub decides by .gitattributes and content).
LFS_SUFFIXES = (".parquet", ".arrow")


def git_blob_sha(content: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, dict] = field(default_factory=dict)  # sha -> {"files": {path: bytes}, "parent", ...}

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.commits:
            return revision
        matches = [sha for sha in self.commits if sha.startswith(revision)] if len(revision) >= 7 else []
        return matches[0] if len(matches) == 1 else None


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class LocalHub:
    """The stand-in server; `start()` / `stop()` or use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> contents uploaded with PUT /lfs-upload/{sha256}
        self.lfs_granted: set[str] = set()  # sha256 of the uploads a batch request allowed
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub._dispatch(self, "GET")

            def do_HEAD(self):
                hub._dispatch(self, "HEAD")

            def do_POST(self):
                hub._dispatch(self, "POST")

            def do_PUT(self):
                hub._dispatch(self, "PUT")

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LocalHub":
        self.thread = threading.Thread(target=self.server.serve_forever, name="local-hub", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ direct access (for tests)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        repo = self.repos[(repo_type, repo_id)]
        return dict(repo.commits[repo.resolve(revision)]["files"])

    # ------------------------------------------------------------------ HTTP plumbing

    def _dispatch(self, handler, method: str) -> None:
        parsed = urllib.parse.urlsplit(handler.path)
        path, query = parsed.path, urllib.parse.parse_qs(parsed.query)
        with self.lock:
            self.requests.append((method, path))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        authorized = bool(handler.headers.get("Authorization"))
        try:
            status, headers, payload = self._route(method, path, query, body, authorized,
                                                   handler.headers.get("Range"))
        except HubError as err:
            status, payload = err.status, json.dumps({"error": err.message, **err.extra}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
        except Exception as err:  # noqa: BLE001 - report server bugs to the client as 500
            status, headers, payload = 500, {"Content-Type": "text/plain"}, f"{type(err).__name__}: {err}".encode()
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(payload)

    @staticmethod
    def _json(value, status: int = 200):
        return status, {"Content-Type": "application/json"}, json.dumps(value).encode()

    def _repo(self, repo_type: str, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(404, "RepoNotFound", f"Repository not found: {repo_type}s/{repo_id}")
        return repo

    @staticmethod
    def _commit_sha(repo: Repo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return sha

    def _route(self, method, path, query, body, authorized, byte_range=None):
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if method == "POST" and parts[-4:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(json.loads(body or b"{}"), authorized)
        if method == "PUT" and len(parts) == 2 and parts[0] == "lfs-upload":
            return self._lfs_put(parts[1], body, authorized)
        if method == "POST" and parts[:3] == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body or b"{}"), authorized)
        if parts[:2] == ["api", "whoami-v2"]:
            if not authorized:
                raise HubError(401, None, "Invalid credentials in Authorization header")
            return self._json({"type": "user", "name": "local-tester", "orgs": [], "auth": {}})
        if method == "POST" and parts[:2] == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body or b"{}"))
        if len(parts) >= 4 and parts[0] == "api" and parts[1].rstrip("s") in REPO_TYPES:
            repo_type = parts[1][:-1]
            repo_id, rest = "/".join(parts[2:4]), parts[4:]
            repo = self._repo(repo_type, repo_id, authorized)
            if method == "GET" and not rest:
                return self._info(repo, "main")
            action, args = rest[0], rest[1:]
            if method == "GET" and action == "revision":
                return self._info(repo, "/".join(args))
            if method == "GET" and action == "tree":
                return self._tree(repo, args, query)
            if method == "POST" and action == "paths-info":
                return self._paths_info(repo, args, body)
            if not authorized:
                raise HubError(401, None, "write access needs a token")
            if method == "POST" and action == "preupload":
                return self._preupload(repo, "/".join(args), json.loads(body))
            if method == "POST" and action == "commit":
                return self._commit(repo, "/".join(args), body)
            if method == "POST" and action == "branch":
                return self._create_branch(repo, "/".join(args), json.loads(body or b"{}"))
        if method in ("GET", "HEAD") and "resolve" in parts:
            return self._resolve(parts, authorized, byte_range)
        raise HubError(404, None, f"not served by the local Hub stand-in: {method} {path}")

    # ------------------------------------------------------------------ endpoints

    def _create_repo(self, payload, authorized):
        if not authorized:
            raise HubError(401, None, "creating a repository needs a token")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or 'local-tester'}/{payload['name']}"
        key = (repo_type, repo_id)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        if key in self.repos:  # the Hub answers with the existing repository's url
            raise HubError(409, None, f"You already created this {repo_type} repo", url=f"{self.url}/{prefix}{repo_id}")
        sha = hashlib.sha1(f"init {repo_type} {repo_id} {time.time_ns()}".encode()).hexdigest()
        files = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
        repo = Repo(repo_id, repo_type, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        repo.commits[sha] = {"files": files, "parent": None, "summary": "initial commit"}
        repo.branches["main"] = sha
        self.repos[key] = repo
        return self._json({"url": f"{self.url}/{prefix}{repo_id}", "name": repo_id, "id": repo_id})

    def _create_branch(self, repo: Repo, branch: str, payload):
        if branch in repo.branches:
            raise HubError(409, None, f"Reference already exists: refs/heads/{branch}")
        start = payload.get("startingPoint") or "main"
        repo.branches[branch] = self._commit_sha(repo, start)
        return self._json({})

    def _info(self, repo: Repo, revision: str):
        sha = self._commit_sha(repo, revision)
        files = repo.commits[sha]["files"]
        return self._json({
            "id": repo.repo_id, "_id": repo.repo_id, "modelId": repo.repo_id, "sha": sha, "private": repo.private,
            "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
            "siblings": [{"rfilename": name, "size": len(data)} for name, data in sorted(files.items())],
            "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
        })

    @staticmethod
    def _entries(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict]:
        prefix = prefix.strip("/")
        start = f"{prefix}/" if prefix else ""
        entries, folders = [], set()
        for name, data in sorted(files.items()):
            if not name.startswith(start):
                continue
            rest = name[len(start):]
            if "/" in rest and not recursive:
                folders.add(start + rest.split("/", 1)[0])
                continue
            if recursive:
                parents = name.split("/")[:-1]
                folders.update("/".join(parents[: i + 1]) for i in range(len(parents)) if "/".join(parents[: i + 1]).startswith(start))
            entries.append({"type": "file", "oid": git_blob_sha(data), "size": len(data), "path": name})
        entries += [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                    for f in sorted(folders) if f != prefix]
        return entries

    def _tree(self, repo: Repo, args, query):
        revision, prefix = args[0], "/".join(args[1:])
        files = repo.commits[self._commit_sha(repo, revision)]["files"]
        recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
        if prefix and not any(n.startswith(prefix.strip("/") + "/") for n in files):
            raise HubError(404, "EntryNotFound", f"{prefix} does not exist on {revision}")
        return self._json(self._entries(files, prefix, recursive))

    def _paths_info(self, repo: Repo, args, body):
        files = repo.commits[self._commit_sha(repo, "/".join(args))]["files"]
        try:
            payload = json.loads(body)
            paths = payload.get("paths", [])
        except (json.JSONDecodeError, UnicodeDecodeError):
            paths = urllib.parse.parse_qs(body.decode()).get("paths", [])
        out = []
        for path in paths:
            if path in files:
                out.append({"type": "file", "oid": git_blob_sha(files[path]), "size": len(files[path]), "path": path})
            elif any(n.startswith(path.rstrip("/") + "/") for n in files):
                out.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path})
        return self._json(out)

    def _preupload(self, repo: Repo, revision: str, payload):
        sha = repo.resolve(revision)
        files = repo.commits[sha]["files"] if sha else {}
        return self._json({"files": [
            {"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
             "shouldIgnore": False,
             "oid": git_blob_sha(files[f["path"]]) if f["path"] in files else None}
            for f in payload.get("files", [])
        ]})

    def _commit(self, repo: Repo, revision: str, body: bytes):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, None, "a commit starts with a header line")
        header = lines[0]["value"]
        with self.lock:
            parent = repo.branches.get(revision)
            if parent is None:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision} (not a branch)")
            if header.get("parentCommit") and header["parentCommit"] != parent:
                raise HubError(412, None, "A commit has happened since the parent commit")
            files = dict(repo.commits[parent]["files"])
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, None, f"unsupported encoding {value.get('encoding')!r}")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "lfsFile":
                    if value["oid"] not in self.lfs_objects:
                        raise HubError(400, None, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    files[value["path"]] = self.lfs_objects[value["oid"]]
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HubError(404, "EntryNotFound", "A file with this name doesn't exist")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for name in [n for n in files if n.startswith(prefix)]:
                        del files[name]
                else:  # copies: never asked for
                    raise HubError(400, None, f"the local Hub stand-in does not accept {key!r} operations")
            digest = hashlib.sha1(repr((parent, header.get("summary"), sorted(
                (n, git_blob_sha(d)) for n, d in files.items()), time.time_ns())).encode()).hexdigest()
            repo.commits[digest] = {"files": files, "parent": parent, "summary": header.get("summary")}
            repo.branches[revision] = digest
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return self._json({"success": True, "commitOid": digest, "pullRequestUrl": None,
                           "commitUrl": f"{self.url}/{prefix}{repo.repo_id}/commit/{digest}"})

    def _lfs_batch(self, payload, authorized):
        if not authorized:
            raise HubError(401, None, "LFS uploads need a token")
        objects = []
        for obj in payload.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs_objects:  # no "actions": already stored, the client skips it
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}
                self.lfs_granted.add(obj["oid"])
            objects.append(entry)
        return self._json({"transfer": "basic", "objects": objects})

    def _lfs_put(self, oid: str, body: bytes, authorized):
        # like the Hub's presigned storage URLs: no token, but only for objects a batch request granted
        if oid not in self.lfs_granted:
            raise HubError(403, None, f"no LFS upload was granted for {oid}")
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, None, f"uploaded contents do not match sha256 {oid}")
        with self.lock:
            self.lfs_objects[oid] = body
        return 200, {}, b""

    def _resolve(self, parts, authorized, byte_range=None):
        at = parts.index("resolve")
        head = parts[:at]
        repo_type = "model"
        if head and head[0].rstrip("s") in ("dataset", "space") and len(head) == 3:
            repo_type, head = head[0][:-1], head[1:]
        repo = self._repo(repo_type, "/".join(head), authorized)
        revision, filename = parts[at + 1], "/".join(parts[at + 2:])
        sha = self._commit_sha(repo, revision)
        files = repo.commits[sha]["files"]
        if filename not in files:
            raise HubError(404, "EntryNotFound", f"{filename} does not exist on {revision}")
        data = files[filename]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(data)}"', "Content-Type": "application/octet-stream",
                   "Accept-Ranges": "bytes"}
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", (byte_range or "").strip())
        if match and data and (match[1] or match[2]):
            if match[1]:
                start, end = int(match[1]), min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
            else:  # bytes=-n: the last n bytes
                start, end = max(0, len(data) - int(match[2])), len(data) - 1
            if start > end:
                raise HubError(416, None, f"range {byte_range} outside {len(data)} bytes")
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, headers, data[start:end + 1]
        return 200, headers, data

    def _validate_yaml(self, payload):
        content = payload.get("content", "")
        if not content.startswith("---"):
            return self._json({"warnings": [{"message": "empty or missing yaml metadata in repo card"}]})
        try:
            metadata = yaml.safe_load(content.split("---", 2)[1]) or {}
        except yaml.YAMLError as err:
            raise HubError(400, None, f"Invalid YAML in the card metadata: {err}")
        for entry in metadata.get("model-index") or []:
            if not isinstance(entry, dict) or "name" not in entry or not entry.get("results"):
                raise HubError(400, None, '"model-index" entries need a "name" and "results"')
            for result in entry["results"]:
                if "task" not in result or "dataset" not in result or "metrics" not in result:
                    raise HubError(400, None, '"model-index[].results[]" need "task", "dataset" and "metrics"')
        return self._json({"warnings": []})


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with LocalHub(port=args.port) as hub:
        print(f"local Hub stand-in at {hub.url}  (export HF_ENDPOINT={hub.url} HF_TOKEN=anything HF_HUB_DISABLE_XET=1)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
