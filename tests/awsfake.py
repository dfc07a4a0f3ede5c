"""AWS for tests: moto's server over real HTTP, behind a small fault-injecting proxy.

moto answers EC2 and S3 on one loopback port. It cannot fail on purpose, so the
tests talk to a reverse proxy in front of it: each request is forwarded unchanged
unless a rule matches it, in which case the proxy answers with AWS's error XML
(the same body a real endpoint sends; S3's form for rules that match on method and
path, see `fail_request`). The proxy also keeps a log of what it saw
(action, method, path, user agent), so a test can tell who moved the bytes.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from quietserver import QuietHTTPServer, free_port, serve, shut

REGION = "eu-west-1"



@dataclass
class Rule:
    """Answer requests whose action is `action` (and whose body contains `contains`) with an error.

    A rule with a `method` matches on the HTTP method and a substring of the path instead
    (S3 has no Action parameter).
    """

    action: str
    code: str
    status: int = 400
    message: str = "injected by the test proxy"
    contains: str = ""
    times: int | None = None  # None: every matching request
    hits: int = 0
    method: str = ""
    path: str = ""


@dataclass
class Seen:
    method: str
    path: str
    action: str
    user_agent: str
    status: int
    params: dict[str, str] = field(default_factory=dict)  # an EC2-style request's form fields


@dataclass
class FaultProxy:
    upstream_port: int
    rules: list[Rule] = field(default_factory=list)
    log: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: QuietHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, action: str, code: str, **kw) -> Rule:  # type: ignore[no-untyped-def]
        rule = Rule(action, code, **kw)
        with self._lock:
            self.rules.append(rule)
        return rule

    def fail_request(self, method: str, path: str, code: str, **kw) -> Rule:  # type: ignore[no-untyped-def]
        """Answer `method` requests whose path contains `path` with S3's error XML."""
        return self.fail("", code, method=method, path=path, **kw)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.log.clear()

    def actions(self, name: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.log if s.action == name]

    def _match(self, action: str, method: str, path: str, body: bytes) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method:
                    hit = rule.method == method and rule.path in path
                else:
                    hit = bool(action) and rule.action == action and rule.contains.encode() in body
                if hit and (rule.times is None or rule.hits < rule.times):
                    rule.hits += 1
                    return rule
        return None

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = urlsplit(self.path).query
                params = parse_qs(body.decode("latin-1")) if body[:7] == b"Action=" else parse_qs(query)
                action = (params.get("Action") or [""])[0]
                rule = proxy._match(action, self.command, self.path, body)
                if rule is not None:
                    error = f"<Code>{escape(rule.code)}</Code><Message>{escape(rule.message)}</Message>"
                    payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{error}<RequestId>injected'
                               f"</RequestId></Error>" if rule.method else
                               f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>{error}'
                               f"</Error></Errors><RequestID>injected</RequestID></Response>").encode()
                    status, headers = rule.status, [("Content-Type", "text/xml")]
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                    forward = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                    conn.request(self.command, self.path, body=body if length else None, headers=forward)
                    resp = conn.getresponse()
                    payload = resp.read()
                    status = resp.status
                    # A HEAD answer has no body: keep its Content-Length, which describes the object.
                    dropped = ("transfer-encoding", "connection") if self.command == "HEAD" else \
                        ("transfer-encoding", "connection", "content-length")
                    headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in dropped]
                    conn.close()
                with proxy._lock:
                    proxy.log.append(Seen(self.command, self.path, action, self.headers.get("User-Agent", ""),
                                          status, {k: v[0] for k, v in params.items()} if action else {}))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                if self.command != "HEAD" or rule is not None:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self._server = serve(Handler, "aws-fault-proxy")
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        shut(self._server)


class MotoAWS:
    """moto's server on a loopback port, and the proxy in front of it."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.moto_port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
        self.proxy = FaultProxy(self.moto_port)
        self._default_ami: str | None = None

    def start(self) -> None:
        self.server.start()
        self.proxy.start()

    def stop(self) -> None:
        self.proxy.stop()
        self.server.stop()

    @property
    def url(self) -> str:
        """Where vh-orch is pointed: the proxy."""
        return self.proxy.url

    def reset(self) -> None:
        """Forget every instance, bucket and rule (moto's reset endpoint, ~70 ms)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.moto_port, timeout=30)
        conn.request("POST", "/moto-api/reset")
        conn.getresponse().read()
        conn.close()
        self.proxy.clear()

    def client(self, service: str):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(service, region_name=REGION, endpoint_url=self.moto_url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    @property
    def moto_url(self) -> str:
        """moto itself, past the proxy (for the test's own look at the state)."""
        return f"http://127.0.0.1:{self.moto_port}"

    def default_ami(self) -> str:
        """moto's first Amazon image: the same after every reset, so asked once (moto builds its
        list of images anew on the first question after a reset, ~1.5 s)."""
        if self._default_ami is None:
            images = self.client("ec2").describe_images(Owners=["amazon"])["Images"]
            self._default_ami = sorted(i["ImageId"] for i in images)[0]
        return self._default_ami
