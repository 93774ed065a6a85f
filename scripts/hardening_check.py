#!/usr/bin/env python3
"""Checks the hardening findings against a running AccuBooks server (loopback, bounded).

    scripts/hardening_check.py http://127.0.0.1:8080 OPERATOR_TOKEN [HEADER_TIMEOUT_SECONDS]

1. 300 requests with random methods to unknown paths leave /metrics bounded.
2. NUL in a text field, a nested text field and a field name is 422 validation_failed.
3. A failure row with a NUL field name does not take its neighbour's audit row with it
   (idem_audit_rows_dropped_total stays 0).
4. A client trickling header lines is cut off within the header timeout.
5. 1,500 idle connections do not delay /healthz.
Prints one line per check and exits non-zero if any fails.
"""

import json
import random
import socket
import string
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

BASE, OPERATOR = sys.argv[1], sys.argv[2]
HEADER_TIMEOUT = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
HOST, PORT = urllib.parse.urlsplit(BASE).hostname, urllib.parse.urlsplit(BASE).port
failed = []


def request(method, path, token=None, body=None, headers=None):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else body.encode()
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(BASE + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f" ({detail})" if detail else ""))
    if not ok:
        failed.append(name)


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[-1])
    return None


status, body = request("POST", "/admin/companies", OPERATOR, json.dumps({"name": "Check"}))
assert status == 201, (status, body)
token = json.loads(body)["api_token"]
status, body = request("POST", "/admin/companies", OPERATOR, json.dumps({"name": "Other"}))
other = json.loads(body)["api_token"]

# 1. Methods.
before = len(request("GET", "/metrics")[1])
for i in range(300):
    m = "".join(random.choices(string.ascii_uppercase, k=8))
    request(m, f"/nope/{i}")
text = request("GET", "/metrics")[1].decode()
methods = {l.split('method="')[1].split('"')[0] for l in text.splitlines() if 'method="' in l}
check("1 random methods: fixed label set", methods <= {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other"}, f"{sorted(methods)}; /metrics {before} -> {len(text)} bytes")

# 2. NUL.
cases = [
    ("/api/customers", '{"name":"a\\u0000b"}', "name"),
    ("/api/customers", '{"name":"x","a\\u0000b":1}', "a\u0000b"),
    ("/api/customers", '{"name":"x","email":"a\\u0000@b"}', "email"),
    ("/api/bank-transactions", '{"amount":"1.00","posted_on":"2024-01-01","description":"\\u0000"}', "description"),
]
for i, (path, body, field) in enumerate(cases):
    status, res = request("POST", path, token, body, {"Idempotency-Key": f"nul-{i}-{time.time()}"})
    doc = json.loads(res) if res else {}
    fields = [e.get("field") for e in doc.get("errors", [])]
    check(f"2 NUL in {field!r} on {path}", status == 422 and doc.get("code") == "validation_failed" and field in fields, f"{status} {fields}")

# 3. Audit neighbours.
dropped_before = metric(request("GET", "/metrics")[1].decode(), "idem_audit_rows_dropped")
for i in range(20):
    request("POST", "/api/customers", token, '{"name":"x","a\\u0000\\u0007b":1}', {"Idempotency-Key": f"a-{i}-{time.time()}"})
    request("POST", "/api/customers", other, '{"name":"x","zzz":1}', {"Idempotency-Key": f"b-{i}-{time.time()}"})
time.sleep(2)
text = request("GET", "/metrics")[1].decode()
dropped = metric(text, "idem_audit_rows_dropped")
check("3 no audit row dropped for a neighbour's NUL", dropped == dropped_before, f"dropped {dropped_before} -> {dropped}, written {metric(text, 'idem_audit_rows_written')}")

# 4. Slow headers.
s = socket.create_connection((HOST, PORT))
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
start = time.time()
cut = None
while time.time() - start < HEADER_TIMEOUT + 10:
    time.sleep(0.5)
    try:
        s.sendall(b"X-Slow: 1\r\n")
        s.settimeout(0.01)
        try:
            if s.recv(1024) == b"":
                cut = time.time() - start
                break
        except socket.timeout:
            pass
    except OSError:
        cut = time.time() - start
        break
s.close()
check("4 slow-header client cut off within the header timeout", cut is not None and cut <= HEADER_TIMEOUT + 1.5, f"cut after {cut:.1f}s" if cut else "still connected")

# 5. Idle connections.
idle = [socket.create_connection((HOST, PORT)) for _ in range(1500)]
time.sleep(0.5)
start = time.time()
status, _ = request("GET", "/healthz")
took = time.time() - start
check("5 /healthz with 1,500 idle connections", status == 200 and took < 1.0, f"{status} in {took * 1000:.0f} ms")
for c in idle:
    c.close()

sys.exit(1 if failed else 0)
