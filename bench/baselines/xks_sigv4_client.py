#!/usr/bin/env python3
"""A SigV4 client of an XKS proxy, in the setup AWS's sample proxy
(aws-samples/aws-kms-xks-proxy) was measured in: plain HTTP, a Python client
on 16 connections sharing the machine's cores with the proxy.

Each connection is a thread with its own keep-alive `http.client` connection,
in a closed loop: sign the request with botocore's SigV4 signer (the one
boto3 uses), send it, read the answer, again. The latency of a request is
from sending it to its answer read (the signing before it is the client's
own work, counted in its CPU time, not in the proxy's latency).

Reads one JSON object on stdin:
  url                 the key operation's URL (http://host:port/.../encrypt)
  access_key_id       the store credential's access key id
  secret_access_key   its secret (never printed)
  region, service     what the signature names (service kms-xks-proxy)
  body                the JSON request body, as text
  connections         how many connections (threads)
  warm_up_seconds     run this long before measuring
  measure_seconds     then measure this long

Writes one JSON object on stdout: the measured window's latencies in
milliseconds (one per answer), its errors (an answer other than 200, or no
answer; the first one's reason), its length in seconds and its start and
end (Unix time, for matching the server's own records), the client's CPU
time in it (user + system, all threads), and the requests of the whole run.
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def main() -> int:
    config = json.load(sys.stdin)
    url = urllib.parse.urlsplit(config["url"])
    if url.scheme != "http":
        print(f"the URL must be plain http (the sample proxy's setup), not {url.scheme}", file=sys.stderr)
        return 2
    signer = SigV4Auth(
        Credentials(config["access_key_id"], config["secret_access_key"]),
        config["service"],
        config["region"],
    )
    body = config["body"].encode()
    connections = int(config["connections"])
    warm_up = float(config["warm_up_seconds"])
    measure = float(config["measure_seconds"])

    lock = threading.Lock()
    latencies = []
    errors = []
    total = [0]
    measuring = threading.Event()
    stop = threading.Event()

    def worker() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        mine = []
        failed = []
        sent = 0
        while not stop.is_set():
            request = AWSRequest(
                method="POST",
                url=config["url"],
                data=body,
                headers={"Content-Type": "application/json"},
            )
            signer.add_auth(request)
            counted = measuring.is_set()
            started = time.perf_counter()
            try:
                conn.request("POST", url.path, body=body, headers=dict(request.headers.items()))
                answer = conn.getresponse()
                text = answer.read()
                status = answer.status
            except (OSError, http.client.HTTPException) as error:
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                status, text = None, str(error).encode()
            elapsed = (time.perf_counter() - started) * 1000.0
            sent += 1
            if counted and measuring.is_set() and not stop.is_set():
                if status == 200:
                    mine.append(elapsed)
                else:
                    failed.append(f"HTTP {status}: {text[:200].decode(errors='replace')}")
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.extend(failed)
            total[0] += sent

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    time.sleep(warm_up)
    cpu_before = time.process_time()
    window_start_unix = time.time()
    measuring.set()
    window_started = time.perf_counter()
    time.sleep(measure)
    stop.set()
    seconds = time.perf_counter() - window_started
    window_end_unix = time.time()
    cpu_ms = (time.process_time() - cpu_before) * 1000.0
    for thread in threads:
        thread.join(timeout=15)
    json.dump(
        {
            "latencies_ms": latencies,
            "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "seconds": seconds,
            "window_start_unix": window_start_unix,
            "window_end_unix": window_end_unix,
            "client_cpu_ms": cpu_ms,
            "requests": total[0],
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
