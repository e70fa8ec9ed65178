"""A real S3-compatible object store for tests: moto's S3 server app (its server mode),
served on 127.0.0.1 by werkzeug in a thread, with every request it answers recorded.

Everything that speaks S3 in this project (streaming's downloaders and uploaders,
composer's object store) finds it through `S3_ENDPOINT_URL`; the credentials are dummies,
and AWS's configuration files and instance metadata are switched off, so nothing reaches
beyond the loopback address.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager


class S3Server:
    """moto's S3 on 127.0.0.1:PORT; `requests` lists (method, path) of every request."""

    def __init__(self) -> None:
        from moto.moto_server.threaded_moto_server import MotoRequestHandler
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()

        def counting(environ, start_response):
            with self._lock:
                self.requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
            return app(environ, start_response)

        class Quiet(MotoRequestHandler):
            def log_request(self, *args) -> None:  # the requests are recorded above
                pass

        self._server = make_server("127.0.0.1", 0, counting, threaded=True, request_handler=Quiet)
        self.url = f"http://127.0.0.1:{self._server.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def env(self) -> dict[str, str]:
        """What a process needs to use this server as its S3 (and no other)."""
        return {
            "S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):
        import boto3

        e = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"],
            region_name=e["AWS_DEFAULT_REGION"],
        )

    def bucket(self, name: str) -> str:
        """Create bucket `name` (if new); its URL."""
        client = self.client()
        if name not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
            client.create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def gets(self, prefix: str = "") -> list[str]:
        """Paths of the GET requests so far under `/prefix` (downloads and listings)."""
        with self._lock:
            return [p for m, p in self.requests if m == "GET" and p.startswith("/" + prefix)]

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join()


@contextmanager
def environment(values: dict[str, str]):
    """Set environment variables for the duration, then restore them."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
