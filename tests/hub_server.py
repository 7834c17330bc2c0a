"""A strict loopback stand-in for the Hugging Face Hub's model-repo API, for push tests.

It speaks the routes the real ``huggingface_hub`` / ``transformers`` clients call to create a
repo, upload (regular files inline, LFS files through the batch API with sha256 checked),
commit (to a branch or as a pull request on ``refs/pr/N``), tag, and download
(``../shared/HUB_TESTING.md``). Anything else is answered 400 and recorded in
``violations``; a write without the expected bearer token is answered 401.
The clients under test run in subprocesses (``HF_ENDPOINT`` must be set before
``huggingface_hub`` is imported); the server runs in a thread of the test process, which
inspects ``hub`` directly.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".model")


class Hub:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, dict] = {}
        self.lfs: dict[str, bytes] = {}
        self.violations: list[str] = []
        self.commits: list[dict] = []
        self.lock = threading.Lock()

    def state(self) -> dict:
        return {
            "repos": {
                rid: {
                    "private": r["private"],
                    "refs": {ref: sorted(files) for ref, files in r["refs"].items()},
                    "tags": r["tags"],
                }
                for rid, r in self.repos.items()
            },
            "commits": self.commits,
            "violations": self.violations,
            "lfs_objects": sorted(self.lfs),
        }


def make_handler(hub: Hub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        # -- plumbing ------------------------------------------------------------------------
        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(n) if n else b""
            if self.headers.get("Content-Encoding") == "gzip":
                data = gzip.decompress(data)
            return data

        def _send(self, status: int, payload=None, headers: dict | None = None, body: bytes | None = None):
            if body is None:
                body = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _not_found(self, code: str):
            self._send(404, {"error": code}, headers={"X-Error-Code": code})

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {hub.token}":
                self._send(401, {"error": "Invalid credentials"})
                return False
            return True

        def _reject(self):
            with hub.lock:
                hub.violations.append(f"{self.command} {self.path}")
            self._send(400, {"error": f"not allowed by the test server: {self.command} {self.path}"})

        def _base(self) -> str:
            return f"http://{self.headers.get('Host')}"

        # -- routing -------------------------------------------------------------------------
        def do_POST(self):
            path = urlparse(self.path).path
            query = parse_qs(urlparse(self.path).query)
            body = self._body()
            if path == "/api/repos/create":
                return self._create(json.loads(body or b"{}"))
            if path == "/api/validate-yaml":
                return self._send(200, {"errors": [], "warnings": []})
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/(.+)", path):
                return self._preupload(m.group(1), json.loads(body))
            if m := re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path):
                return self._lfs_batch(m.group(1), json.loads(body))
            if m := re.fullmatch(r"/lfs-verify/([0-9a-f]{64})", path):
                return self._send(200 if m.group(1) in hub.lfs else 404, {})
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/(.+)", path):
                return self._commit(
                    m.group(1), unquote(m.group(2)), body, query.get("create_pr", ["0"])[0] in ("1", "true")
                )
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/branch/(.+)", path):
                return self._branch(m.group(1), unquote(m.group(2)), json.loads(body or b"{}"))
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tag/(.+)", path):
                return self._tag(m.group(1), unquote(m.group(2)), json.loads(body or b"{}"))
            return self._reject()

        def do_PUT(self):
            path = urlparse(self.path).path
            if m := re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", path):
                data = self._body()
                if hashlib.sha256(data).hexdigest() != m.group(1):
                    with hub.lock:
                        hub.violations.append(f"LFS upload with a wrong sha256: {m.group(1)}")
                    return self._send(400, {"error": "sha256 mismatch"})
                with hub.lock:
                    hub.lfs[m.group(1)] = data
                return self._send(200, {})
            return self._reject()

        def do_GET(self):
            self._read()

        def do_HEAD(self):
            self._read()

        def _read(self):
            path = urlparse(self.path).path
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path):
                return self._info(m.group(1), unquote(m.group(2) or "main"))
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path):
                return self._tree(m.group(1), unquote(m.group(2)), m.group(3) or "")
            if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                return self._resolve(m.group(1), unquote(m.group(2)), unquote(m.group(3)))
            return self._reject()

        # -- write routes ------------------------------------------------------------------------
        def _create(self, payload: dict):
            if not self._authorized():
                return
            repo_id = f"{payload.get('organization')}/{payload['name']}"
            url = {"url": f"{self._base()}/{repo_id}"}
            with hub.lock:
                if repo_id in hub.repos:
                    return self._send(409, url)
                hub.repos[repo_id] = {
                    "private": bool(payload.get("private")),
                    "refs": {"main": {}},
                    "tags": {},
                    "shas": {"main": "0" * 40},
                    "prs": 0,
                }
            return self._send(200, url)

        def _repo(self, repo_id: str):
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._not_found("RepoNotFound")
            return repo

        def _writable(self, repo_id: str):
            """The repo, when the request carries the token and the repo exists (else answered)."""
            return self._repo(repo_id) if self._authorized() else None

        def _preupload(self, repo_id: str, payload: dict):
            if self._writable(repo_id) is None:
                return
            files = [
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                    "shouldIgnore": False,
                }
                for f in payload.get("files", [])
            ]
            return self._send(200, {"files": files})

        def _lfs_batch(self, repo_id: str, payload: dict):
            if self._writable(repo_id) is None:
                return
            objects = []
            for o in payload.get("objects", []):
                entry = {"oid": o["oid"], "size": o["size"]}
                if o["oid"] not in hub.lfs:
                    entry["actions"] = {
                        "upload": {"href": f"{self._base()}/lfs-upload/{o['oid']}"},
                        "verify": {"href": f"{self._base()}/lfs-verify/{o['oid']}"},
                    }
                objects.append(entry)
            return self._send(200, {"transfer": "basic", "objects": objects})

        def _commit(self, repo_id: str, revision: str, body: bytes, create_pr: bool):
            repo = self._writable(repo_id)
            if repo is None:
                return
            if revision not in repo["refs"]:
                return self._not_found("RevisionNotFound")
            header, changes = {}, {}
            for line in body.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    header = value
                elif key == "file":
                    changes[value["path"]] = base64.b64decode(value["content"])
                elif key == "lfsFile":
                    if value["oid"] not in hub.lfs:
                        with hub.lock:
                            hub.violations.append(f"commit names an LFS object never uploaded: {value['path']}")
                        return self._send(400, {"error": "unknown LFS object"})
                    changes[value["path"]] = ("lfs", value["oid"])
                else:
                    return self._reject()
            with hub.lock:
                files = dict(repo["refs"][revision])
                files.update(changes)
                target = revision
                pr_url = None
                if create_pr:
                    repo["prs"] += 1
                    target = f"refs/pr/{repo['prs']}"
                    pr_url = f"{self._base()}/{repo_id}/discussions/{repo['prs']}"
                sha = hashlib.sha1(json.dumps([repo_id, target, sorted(files), len(hub.commits)]).encode()).hexdigest()
                repo["refs"][target] = files
                repo["shas"][target] = sha
                hub.commits.append(
                    {
                        "repo_id": repo_id,
                        "ref": target,
                        "sha": sha,
                        "summary": header.get("summary"),
                        "files": sorted(changes),
                        "authorization": "Bearer ***",
                    }
                )
            return self._send(
                200, {"commitUrl": f"{self._base()}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": pr_url}
            )

        def _branch(self, repo_id: str, branch: str, payload: dict):
            repo = self._writable(repo_id)
            if repo is None:
                return
            with hub.lock:
                if branch in repo["refs"]:
                    return self._send(409, {"error": "Reference already exists"})
                source = payload.get("startingPoint") or "main"
                repo["refs"][branch] = dict(repo["refs"].get(source, {}))
                repo["shas"][branch] = repo["shas"].get(source, "0" * 40)
            return self._send(200, {})

        def _tag(self, repo_id: str, revision: str, payload: dict):
            repo = self._writable(repo_id)
            if repo is None:
                return
            with hub.lock:
                repo["tags"][payload["tag"]] = revision
            return self._send(200, {})

        # -- read routes ---------------------------------------------------------------------
        def _ref(self, repo, revision: str):
            if revision in repo["tags"]:
                sha = repo["tags"][revision]
                revision = next((r for r, s in repo["shas"].items() if s == sha), revision)
            if revision not in repo["refs"]:
                sha_match = next((r for r, s in repo["shas"].items() if s == revision), None)
                revision = sha_match or revision
            return revision if revision in repo["refs"] else None

        def _revision(self, repo_id: str, revision: str):
            """(repo, ref) for a readable revision; (None, None) once a 404 is answered."""
            repo = self._repo(repo_id)
            ref = None if repo is None else self._ref(repo, revision)
            if repo is not None and ref is None:
                self._not_found("RevisionNotFound")
            return repo, ref

        def _info(self, repo_id: str, revision: str):
            repo, ref = self._revision(repo_id, revision)
            if ref is None:
                return
            files = repo["refs"][ref]
            return self._send(
                200,
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": repo["shas"][ref],
                    "private": repo["private"],
                    "siblings": [{"rfilename": f} for f in sorted(files)],
                    "tags": [],
                    "downloads": 0,
                },
            )

        def _tree(self, repo_id: str, revision: str, prefix: str):
            repo, ref = self._revision(repo_id, revision)
            if ref is None:
                return
            entries = []
            for name, content in sorted(repo["refs"][ref].items()):
                if prefix and not name.startswith(prefix.rstrip("/") + "/"):
                    continue
                data = hub.lfs[content[1]] if isinstance(content, tuple) else content
                entry = {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                if isinstance(content, tuple):
                    entry["lfs"] = {"oid": content[1], "size": len(data), "pointerSize": 134}
                entries.append(entry)
            if prefix and not entries:
                return self._not_found("EntryNotFound")
            return self._send(200, entries)

        def _resolve(self, repo_id: str, revision: str, name: str):
            repo, ref = self._revision(repo_id, revision)
            if ref is None:
                return
            content = repo["refs"][ref].get(name)
            if content is None:
                return self._not_found("EntryNotFound")
            headers = {"X-Repo-Commit": repo["shas"][ref]}
            if isinstance(content, tuple):
                data = hub.lfs[content[1]]
                headers.update(
                    {"ETag": f'"{content[1]}"', "X-Linked-Etag": f'"{content[1]}"', "X-Linked-Size": len(data)}
                )
            else:
                data = content
                headers["ETag"] = f'"{hashlib.sha1(data).hexdigest()}"'
            return self._send(200, headers=headers, body=data)

    return Handler


class HubServer:
    """The server on a free loopback port, in a daemon thread: ``with HubServer(token) as hub``."""

    def __init__(self, token: str):
        self.hub = Hub(token)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.hub))
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HubServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
