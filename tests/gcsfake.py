"""GCS for tests: gcp-storage-emulator over real HTTP, behind a proxy that checks signed URLs.

The emulator (in memory, on a loopback port) serves the JSON API that google-cloud-storage
speaks (`/storage/v1/...`, `/upload/storage/v1/...`, `/download/storage/v1/...`) and
GET/PUT at the XML API's path form `/<bucket>/<object>`, which is where a V4 signed URL
points. It does not check signatures at all: any query string, any method, even none. So
the tests talk to a reverse proxy in front of it that does what GCS does with a request at
the XML path form: with no X-Goog-Signature it is refused (AccessDenied, as for a private
bucket); with one, the proxy rebuilds the canonical request and string to sign from the
request as received (method, path, query, signed headers) the way GCS documents V4
signing, and checks the RSA signature with the test service account's public key and the
expiry. Only then is the request forwarded. The proxy also answers the token endpoint of
the test service account (`POST /token`), so Application Default Credentials from a key
file work end to end, and it can answer chosen requests with an error (`fail_request`).
"""

from __future__ import annotations

import binascii
import calendar
import hashlib
import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit
from xml.sax.saxutils import escape

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from quietserver import QuietHTTPServer, free_port, serve, shut

SERVICE_ACCOUNT = "vh-orch-test@vh-orch-test.iam.gserviceaccount.com"
JSON_API = ("/storage/v1/", "/upload/storage/v1/", "/download/storage/v1/", "/batch/storage/v1")



class ServiceAccount:
    """A throw-away service account: a fresh RSA key, its key file, and the credentials made from it."""

    def __init__(self, token_uri: str) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        self.info = {
            "type": "service_account", "project_id": "vh-orch-test", "private_key_id": "test-key-1",
            "private_key": pem, "client_email": SERVICE_ACCOUNT, "client_id": "1",
            "token_uri": token_uri,
        }

    def credentials(self):  # type: ignore[no-untyped-def]
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(self.info)


@dataclass
class Seen:
    method: str
    path: str  # with the query string
    user_agent: str
    status: int
    signed: bool


@dataclass
class Rule:
    method: str
    path: str  # a substring of the path and query
    status: int
    reason: str
    times: int | None = None
    hits: int = 0


@dataclass
class SigningProxy:
    upstream_port: int
    public_key: Any = None
    log: list[Seen] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    tokens_issued: int = 0
    port: int = 0
    _server: QuietHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_request(self, method: str, path: str, status: int, reason: str, times: int | None = None) -> Rule:
        """Answer `method` requests whose path contains `path` with GCS's error for `status`."""
        rule = Rule(method, path, status, reason, times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.log.clear()

    def _rule(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method == method and rule.path in path and (rule.times is None or rule.hits < rule.times):
                    rule.hits += 1
                    return rule
        return None

    def check_signature(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, str, str] | None:
        """None if the signed request is good, else (status, code, message) as GCS would answer."""
        raw_path, _, raw_query = target.partition("?")
        params = parse_qsl(raw_query, keep_blank_values=True)
        given = dict(params)
        if given.get("X-Goog-Algorithm") != "GOOG4-RSA-SHA256":
            return 400, "InvalidArgument", "unsupported X-Goog-Algorithm"
        credential = given.get("X-Goog-Credential", "")
        email, _, scope = credential.partition("/")
        if email != SERVICE_ACCOUNT or not scope.endswith("/auto/storage/goog4_request"):
            return 403, "AccessDenied", f"unknown credential {credential!r}"
        stamp = given.get("X-Goog-Date", "")
        signed_at = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
        if time.time() > signed_at + int(given.get("X-Goog-Expires", "0")):
            return 400, "ExpiredToken", "Invalid argument."
        signed_headers = given.get("X-Goog-SignedHeaders", "")
        lowered = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
        canonical_headers = "".join(f"{name}:{lowered.get(name, '')}\n" for name in signed_headers.split(";"))
        query = "&".join(sorted(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in params
                                if k != "X-Goog-Signature"))
        canonical = "\n".join([method, raw_path, query, canonical_headers, signed_headers, "UNSIGNED-PAYLOAD"])
        to_sign = "\n".join(["GOOG4-RSA-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        try:
            signature = binascii.unhexlify(given.get("X-Goog-Signature", ""))
            self.public_key.verify(signature, to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, binascii.Error, ValueError):
            return 403, "SignatureDoesNotMatch", ("Access denied. The request signature we calculated does not "
                                                  "match the signature you provided.")
        return None

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: bytes, headers: list[tuple[str, str]], signed: bool) -> None:
                with proxy._lock:
                    proxy.log.append(Seen(self.command, self.path, self.headers.get("User-Agent", ""), status, signed))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                xml_path = path != "/token" and not path.startswith(JSON_API)
                signed = "X-Goog-Signature=" in self.path
                if self.command == "POST" and path == "/token":
                    with proxy._lock:
                        proxy.tokens_issued += 1
                    token = json.dumps({"access_token": "test-token", "expires_in": 3600, "token_type": "Bearer"})
                    return self._answer(200, token.encode(), [("Content-Type", "application/json")], False)
                problem = None
                if xml_path and not signed:
                    problem = 403, "AccessDenied", "Anonymous caller does not have storage.objects access."
                elif xml_path:
                    problem = proxy.check_signature(self.command, self.path, dict(self.headers.items()))
                rule = proxy._rule(self.command, self.path)
                if rule is not None:
                    problem = rule.status, rule.reason, "injected by the test proxy"
                if problem is not None:
                    status, code, message = problem
                    if xml_path:
                        error = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{escape(code)}</Code>"
                                 f"<Message>{escape(message)}</Message></Error>").encode()
                        return self._answer(status, error, [("Content-Type", "application/xml")], signed)
                    error = json.dumps({"error": {"code": status, "message": message,
                                                  "errors": [{"reason": code, "message": message}]}}).encode()
                    return self._answer(status, error, [("Content-Type", "application/json")], signed)
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                forward = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body if length else None, headers=forward)
                resp = conn.getresponse()
                payload = resp.read()
                headers = [(k, v) for k, v in resp.getheaders()
                           if k.lower() not in ("transfer-encoding", "connection", "content-length")]
                conn.close()
                self._answer(resp.status, payload, headers, signed)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self._server = serve(Handler, "gcs-signing-proxy")
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        shut(self._server)


class EmulatedGCS:
    """gcp-storage-emulator on a loopback port, the signing proxy in front, and a service account."""

    def __init__(self) -> None:
        from gcp_storage_emulator.server import create_server

        self.emulator_port = free_port()
        self.emulator = create_server("127.0.0.1", self.emulator_port, in_memory=True)
        self.proxy = SigningProxy(self.emulator_port)
        self.proxy.start()
        self.account = ServiceAccount(token_uri=f"{self.proxy.url}/token")
        self.proxy.public_key = self.account.key.public_key()

    def start(self) -> None:
        self.emulator.start()

    def stop(self) -> None:
        self.proxy.stop()
        self.emulator.stop()

    @property
    def url(self) -> str:
        """Where vh-orch is pointed: the proxy."""
        return self.proxy.url

    def reset(self, *buckets: str) -> None:
        """Empty the emulator, then create `buckets`."""
        self.emulator.wipe()
        self.proxy.clear()
        client = self.client()
        for name in buckets:
            client.create_bucket(name)

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object in `bucket`, read from the emulator's own storage: its JSON API download
        cuts an object name at ';' (it parses paths with urlparse, which splits off ';params')."""
        storage = self.emulator._storage
        return {blob.name: storage.get_file(bucket, blob.name) for blob in self.client().list_blobs(bucket)}

    def client(self):  # type: ignore[no-untyped-def]
        """A client of the test's own, for looking at the state past vh-orch."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="vh-orch-test", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": f"http://127.0.0.1:{self.emulator_port}"})
