#!/usr/bin/env python3
"""A SigV4 client of an XKS proxy, in the setup AWS's sample proxy
(aws-samples/aws-kms-xks-proxy) was measured in: plain HTTP, a Python client
on 16 connections sharing the machine's cores with the proxy.

Each connection is a process of its own (one interpreter's lock would hold
16 threads to one core) with one kept-alive HTTP/1.1 socket, in a closed
loop: sign the request with SigV4, send it, read the answer, again. Every
request is signed anew (canonical request, string to sign, HMAC), with the
signing key derived once a day as the AWS SDKs do; before the run the
signer is checked against botocore's, the one boto3 uses, on the same
request. The HTTP is as lean as the protocol allows (a status line, headers
up to the blank line, a Content-Length body), so the client leaves the cores
to the proxy. The latency of a request is from sending it to its answer
read (the signing before it is the client's own work, counted in its CPU
time, not in the proxy's latency).

Reads one JSON object on stdin:
  url                 the key operation's URL (http://host:port/.../encrypt)
  access_key_id       the store credential's access key id
  secret_access_key   its secret (never printed)
  region, service     what the signature names (service kms-xks-proxy)
  body                the JSON request body, as text
  connections         how many connections (processes)
  warm_up_seconds     run this long before measuring
  measure_seconds     then measure this long

Writes one JSON object on stdout: the measured window's latencies in
milliseconds (one per answer), its errors (an answer other than 200, or no
answer; the first one's reason), its length in seconds and its start and
end (Unix time, for matching the server's own records), the client's CPU
time in it (user + system, all processes), and the requests of the whole
run.
"""

import datetime
import hashlib
import hmac
import json
import multiprocessing
import socket
import sys
import time
import urllib.parse

ALGORITHM = "AWS4-HMAC-SHA256"
SIGNED_HEADERS = "content-type;host;x-amz-date"


class Signer:
    """SigV4 for one endpoint, path and body, as the AWS SDKs sign it."""

    def __init__(self, config: dict, host: str, path: str, body: bytes) -> None:
        self.access_key_id = config["access_key_id"]
        self.secret = config["secret_access_key"]
        self.region = config["region"]
        self.service = config["service"]
        self.host = host
        self.path = urllib.parse.quote(path, safe="/-_.~")
        self.body_hash = hashlib.sha256(body).hexdigest()
        self.day = None
        self.key = b""

    def _signing_key(self, day: str) -> bytes:
        if day != self.day:
            key = hmac.digest(("AWS4" + self.secret).encode(), day.encode(), "sha256")
            for part in (self.region, self.service, "aws4_request"):
                key = hmac.digest(key, part.encode(), "sha256")
            self.day, self.key = day, key
        return self.key

    def authorization(self, amz_date: str) -> str:
        day = amz_date[:8]
        canonical = (
            f"POST\n{self.path}\n\n"
            f"content-type:application/json\nhost:{self.host}\nx-amz-date:{amz_date}\n\n"
            f"{SIGNED_HEADERS}\n{self.body_hash}"
        )
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(day), to_sign.encode(), "sha256").hexdigest()
        return (
            f"{ALGORITHM} Credential={self.access_key_id}/{scope}, "
            f"SignedHeaders={SIGNED_HEADERS}, Signature={signature}"
        )


def amz_date_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def agrees_with_botocore(signer: Signer, config: dict, body: bytes) -> str | None:
    """None when botocore signs the same request alike, else what differs."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST", url=config["url"], data=body, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(
        Credentials(config["access_key_id"], config["secret_access_key"]),
        config["service"],
        config["region"],
    ).add_auth(request)
    theirs = request.headers["Authorization"]
    ours = signer.authorization(request.headers["X-Amz-Date"])
    if theirs != ours:
        # Neither holds the secret: the credential scope and signed headers
        # are public, and a signature is not the secret.
        return f"botocore signs {theirs!r}, this client {ours!r}"
    return None


class Connection:
    """One kept-alive HTTP/1.1 connection, a request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.sock = None
        self.buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=10)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self._receive()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        closes = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                closes = True
        if length is None:
            raise OSError("an answer without Content-Length")
        while len(rest) < length:
            rest += self._receive_more()
        body, self.buffer = rest[:length], rest[length:]
        if closes:
            self.close()
        return status, body

    def _receive(self) -> None:
        self.buffer += self._receive_more()

    def _receive_more(self) -> bytes:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise OSError("the proxy closed the connection")
        return chunk


def connection_loop(config: dict, start: float, end: float, results) -> None:
    """One connection's closed loop; reports on `results` when the window ends.

    `start` and `end` are CLOCK_MONOTONIC times, the same in every process.
    """
    url = urllib.parse.urlsplit(config["url"])
    host = url.netloc
    body = config["body"].encode()
    signer = Signer(config, host, url.path, body)
    head = (
        f"POST {url.path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    ).encode()
    connection = Connection(url.hostname, url.port)
    latencies, errors = [], []
    sent = 0
    cpu_start = None
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if cpu_start is None and now >= start:
            cpu_start = time.process_time()
        amz_date = amz_date_now()
        request = b"".join(
            (
                head,
                f"X-Amz-Date: {amz_date}\r\n".encode(),
                f"Authorization: {signer.authorization(amz_date)}\r\n\r\n".encode(),
                body,
            )
        )
        counted = now >= start
        started = time.perf_counter()
        try:
            status, text = connection.exchange(request)
        except (OSError, ValueError, IndexError) as error:
            connection.close()
            status, text = None, str(error).encode()
        elapsed = (time.perf_counter() - started) * 1000.0
        sent += 1
        if counted and time.monotonic() < end:
            if status == 200:
                latencies.append(elapsed)
            else:
                errors.append(f"HTTP {status}: {text[:200].decode(errors='replace')}")
    cpu = time.process_time() - cpu_start if cpu_start is not None else 0.0
    connection.close()
    results.put((latencies, errors, sent, cpu))


def main() -> int:
    config = json.load(sys.stdin)
    url = urllib.parse.urlsplit(config["url"])
    if url.scheme != "http":
        print(f"the URL must be plain http (the sample proxy's setup), not {url.scheme}", file=sys.stderr)
        return 2
    body = config["body"].encode()
    disagreement = agrees_with_botocore(Signer(config, url.netloc, url.path, body), config, body)
    if disagreement is not None:
        print(f"the client's SigV4 signer disagrees with botocore's: {disagreement}", file=sys.stderr)
        return 1
    connections = int(config["connections"])
    warm_up = float(config["warm_up_seconds"])
    measure = float(config["measure_seconds"])

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start = time.monotonic() + warm_up
    end = start + measure
    processes = [
        context.Process(target=connection_loop, args=(config, start, end, results), daemon=True)
        for _ in range(connections)
    ]
    for process in processes:
        process.start()
    time.sleep(max(0.0, start - time.monotonic()))
    window_start_unix = time.time()
    time.sleep(max(0.0, end - time.monotonic()))
    window_end_unix = time.time()

    latencies, errors = [], []
    requests = 0
    cpu_seconds = 0.0
    for _ in processes:
        mine, failed, sent, cpu = results.get(timeout=30)
        latencies.extend(mine)
        errors.extend(failed)
        requests += sent
        cpu_seconds += cpu
    for process in processes:
        process.join(timeout=15)
    json.dump(
        {
            "latencies_ms": latencies,
            "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "seconds": measure,
            "window_start_unix": window_start_unix,
            "window_end_unix": window_end_unix,
            "client_cpu_ms": cpu_seconds * 1000.0,
            "requests": requests,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
