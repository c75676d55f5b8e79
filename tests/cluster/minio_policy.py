#!/usr/bin/env python3
"""Adds a canned policy to a MinIO server through its admin API (SigV4-signed with root keys).

usage: minio_policy.py ENDPOINT ACCESS_KEY SECRET_KEY POLICY_NAME < policy.json

The local environment has no `mc`: this is the one admin call its STS servers need.
"""
import datetime
import hashlib
import hmac
import sys
import urllib.parse
import urllib.request


def sign(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def main():
    endpoint, access, secret, name = sys.argv[1:5]
    body = sys.stdin.buffer.read()
    url = urllib.parse.urlsplit(endpoint)
    path = "/minio/admin/v3/add-canned-policy"
    query = "name=" + urllib.parse.quote(name, safe="-_.~")
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": url.netloc, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        ["PUT", path, query, "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload]
    )
    scope = f"{day}/us-east-1/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret).encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        key = sign(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    request = urllib.request.Request(f"{endpoint}{path}?{query}", data=body, method="PUT", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


if __name__ == "__main__":
    main()
