"""Inputs and outputs named by presigned URLs: GET inputs, create-only PUT outputs (If-None-Match: *).

The end-to-end path against a real S3-compatible store (versitygw) is test/dataPlane/s3Hosts.e2e.test.ts;
these tests pin the worker's side of the HTTP exchange, and that no signature leaks into messages.
"""

from __future__ import annotations

import hashlib
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from atelier_gpu.images import InputImageError, OutputStoreError, load_image, shown, write_png_atomic


class _Store(BaseHTTPRequestHandler):
    objects: dict[str, bytes] = {}
    headers_seen: list[dict[str, str]] = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        key = self.path.split("?")[0]
        if key not in self.objects:
            self.send_response(404)
            self.end_headers()
            return
        body = self.objects[key]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        key = self.path.split("?")[0]
        self.headers_seen.append(dict(self.headers))
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if "forbidden" in key or self.headers.get("If-None-Match") != "*":
            self.send_response(403)
            self.end_headers()
            self.wfile.write(b"<Error><Code>AccessDenied</Code></Error>")
            return
        if key in self.objects:
            self.send_response(412)
            self.end_headers()
            return
        self.objects[key] = body
        self.send_response(200)
        self.end_headers()


@pytest.fixture()
def store():
    _Store.objects = {}
    _Store.headers_seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format="PNG")
    return buf.getvalue()


def test_reads_an_input_from_a_url(store):
    _Store.objects["/in/0.png"] = _png((200, 10, 10))
    image = load_image(f"{store}/in/0.png?X-Amz-Signature=secret")
    assert image.size == (8, 6) and image.getpixel((0, 0)) == (200, 10, 10)


def test_a_missing_url_input_is_an_input_error_without_the_signature(store):
    with pytest.raises(InputImageError) as info:
        load_image(f"{store}/in/missing.png?X-Amz-Signature=secret")
    assert "not found" in str(info.value) and "secret" not in str(info.value)


def test_writes_an_output_once_with_if_none_match(store):
    url = f"{store}/out/0.png?X-Amz-Signature=secret"
    written = write_png_atomic(Image.new("RGB", (4, 4), (1, 2, 3)), url)
    first = _Store.objects["/out/0.png"]
    assert Image.open(io.BytesIO(first)).getpixel((0, 0)) == (1, 2, 3)
    assert _Store.headers_seen[0]["If-None-Match"] == "*"
    # The worker reports the digest of what it PUT: the commit checks the stored object against it.
    assert written == (hashlib.sha256(first).hexdigest(), len(first))
    # A second PUT finds an object stored (412): nothing is overwritten, and the worker still reports
    # the digest of its own bytes, not the stored object's, so a stranger's object is refused at commit.
    again = write_png_atomic(Image.new("RGB", (4, 4), (9, 9, 9)), url)
    assert _Store.objects["/out/0.png"] == first
    assert again.sha256 != hashlib.sha256(first).hexdigest()


def test_a_local_output_reports_the_digest_of_the_file_written(tmp_path):
    out = tmp_path / "out" / "0.png"
    written = write_png_atomic(Image.new("RGB", (4, 4), (5, 6, 7)), str(out))
    data = out.read_bytes()
    assert written == (hashlib.sha256(data).hexdigest(), len(data))


def test_a_refused_upload_is_an_output_store_error_without_the_signature(store):
    with pytest.raises(OutputStoreError) as info:
        write_png_atomic(Image.new("RGB", (4, 4)), f"{store}/forbidden/0.png?X-Amz-Signature=secret")
    assert "HTTP 403" in str(info.value) and "secret" not in str(info.value)


def test_shown_strips_the_query_of_urls_only():
    assert shown("http://s3:7070/b/k.png?X-Amz-Signature=abc") == "http://s3:7070/b/k.png"
    assert shown("/data/out/0.png") == "/data/out/0.png"
