"""HTTP search backend: a small JSON API, its client, and a stdlib server for any backend.

API (what `HttpSearch` speaks and `serve` implements):
    POST {base}/search            {"queries": ["..."], "k": 5}  ->  {"results": [[SearchHit, ...], ...]}
    GET  {base}/documents/{id}    Document JSON, or 404; {id} is a URL-quoted doc_id or page URL
    GET  {base}/health            {"ok": true}

Serve the embedded index on loopback and query it over HTTP:

    server = serve(EmbeddedSearch(cfg.search, world_dir))      # port 0: the OS picks one
    client = HttpSearch(server.url)
    client.search("a chemist born in 1932", k=5)
    server.close()

With `search.backend: http` and `search.http_url`, `open_backend` returns an `HttpSearch`.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepresearch.errors import DeepResearchError
from deepresearch.search.backend import BackendName, SearchBackend, SearchHit, register_backend
from deepresearch.world.schema import Document

if TYPE_CHECKING:
    from deepresearch.config import SearchConfig

MAX_QUERIES_PER_REQUEST = 64
MAX_K = 100
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class SearchServiceError(DeepResearchError):
    """The search API could not be reached or answered with an error (names the URL)."""


# ---- client -------------------------------------------------------------------------------------
class HttpSearch:
    """Client of the search API; implements the SearchBackend protocol."""

    def __init__(self, base_url: str, *, timeout: float = 30.0):
        if not base_url.startswith(("http://", "https://")):
            raise SearchServiceError(f"search API URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        # A proxy from the environment must not intercept a search server on this machine.
        handlers = [urllib.request.ProxyHandler({})] if host in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        url = self.base_url + path
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return 404, None
            detail = e.read().decode(errors="replace")[:500]
            raise SearchServiceError(
                f"search API {method} {url} failed with HTTP {e.code}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise SearchServiceError(
                f"search API at {url} is unreachable ({reason}); start the server or fix search.http_url"
            ) from None
        except json.JSONDecodeError as e:
            raise SearchServiceError(f"search API {method} {url} returned invalid JSON: {e}") from None

    def search(self, query: str, k: int) -> list[SearchHit]:
        """Top-k paragraphs for one query."""
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: list[str], k: int) -> list[list[SearchHit]]:
        """Top-k paragraphs per query, in one POST (split into several above the per-request limit)."""
        out: list[list[SearchHit]] = []
        for start in range(0, len(queries), MAX_QUERIES_PER_REQUEST):
            chunk = queries[start : start + MAX_QUERIES_PER_REQUEST]
            status, payload = self._request("POST", "/search", {"queries": chunk, "k": k})
            results = payload.get("results") if isinstance(payload, dict) else None
            if status == 404 or not isinstance(results, list) or len(results) != len(chunk):
                raise SearchServiceError(
                    f"search API {self.base_url}/search answered {status} without one result list per query"
                )
            out.extend([SearchHit.model_validate(h) for h in hits] for hits in results)
        return out

    def get_document(self, doc_id: str) -> Document | None:
        """A document by doc_id or URL; None when the server answers 404."""
        status, payload = self._request("GET", "/documents/" + urllib.parse.quote(doc_id, safe=""))
        if status == 404 or payload is None:
            return None
        return Document.model_validate(payload)


@register_backend(BackendName.http)
def open_http_backend(cfg: SearchConfig, world_dir: Path) -> HttpSearch:
    """Registry factory: the search API at `cfg.http_url` (the world directory is not needed)."""
    if not cfg.http_url:
        raise SearchServiceError("search.backend=http needs search.http_url")
    return HttpSearch(cfg.http_url)


# ---- server -------------------------------------------------------------------------------------
class SearchServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer serving one backend; `url` is its base URL, `close()` stops it."""

    daemon_threads = True

    def __init__(self, backend: SearchBackend, host: str, port: int):
        self.backend = backend
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def close(self) -> None:
        """Stop serving and release the socket."""
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server: SearchServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request on stderr would drown the agent's logs

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/health":
            return self._send(200, {"ok": True})
        if path.startswith("/documents/"):
            doc_id = urllib.parse.unquote(path[len("/documents/") :])
            doc = self.server.backend.get_document(doc_id)
            if doc is None:
                return self._send(404, {"error": f"no such document: {doc_id}"})
            return self._send(200, doc.model_dump(mode="json"))
        return self._send(404, {"error": f"unknown path {path}; try POST /search or GET /documents/<id>"})

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path != "/search":
            return self._send(404, {"error": f"unknown path {path}; try POST /search"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, json.JSONDecodeError) as e:
            return self._send(400, {"error": f"request body is not JSON: {e}"})
        queries, k = (body.get("queries"), body.get("k", 5)) if isinstance(body, dict) else (None, None)
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            return self._send(400, {"error": "`queries` must be a list of strings"})
        if len(queries) > MAX_QUERIES_PER_REQUEST:
            return self._send(400, {"error": f"at most {MAX_QUERIES_PER_REQUEST} queries per request"})
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            return self._send(400, {"error": f"`k` must be an integer in [1, {MAX_K}]"})
        try:
            results = self.server.backend.search_batch(queries, k)
        except Exception as e:  # noqa: BLE001 - reported to the client instead of a dropped connection
            return self._send(500, {"error": f"search failed: {type(e).__name__}: {e}"})
        return self._send(200, {"results": [[h.model_dump(mode="json") for h in hits] for hits in results]})


def serve(backend: SearchBackend, host: str = "127.0.0.1", port: int = 0) -> SearchServer:
    """Serve `backend` over the HTTP API from a background thread.

    Args:
        backend: any SearchBackend (typically EmbeddedSearch).
        host: interface to bind; loopback by default.
        port: 0 lets the OS pick a free port (read it back from `server.url`).
    Returns:
        The running SearchServer; call `close()` to stop it.
    """
    server = SearchServer(backend, host, port)
    thread = threading.Thread(target=server.serve_forever, name=f"search-server-{server.url}", daemon=True)
    server._thread = thread
    thread.start()
    return server
