"""Schemathesis hooks for exhost: sign trader requests.

Trader endpoints (security `trader_signature` in the document) are signed
with signature version 2, exactly as API.md says: HMAC-SHA256 of
`timestamp \\n METHOD \\n path_with_query \\n body`, over the bytes that go
on the wire. The signing is a `requests` auth object, so it runs after the
body is serialized. Checks that test authentication itself (`ignored_auth`,
`missing_required_header`) send the case without its credentials, and the
hook leaves such cases unsigned (they carry no X-API-KEY).

Operator endpoints get the bearer token from the same auth provider, so
the checks that strip credentials know what to strip.

Module uploads (`application/wasm`) are drawn from a strategy of byte
strings: well-formed headers of empty modules, truncated ones and noise.
The host must refuse each with a documented 400, never store it.

Environment: EXHOST_TRADER_KEY, EXHOST_TRADER_SECRET, EXHOST_ADMIN_TOKEN.
"""

import hashlib
import hmac
import os
import time

import schemathesis
from hypothesis import strategies as st

KEY = os.environ["EXHOST_TRADER_KEY"]
SECRET = os.environ["EXHOST_TRADER_SECRET"].encode()
TOKEN = os.environ["EXHOST_ADMIN_TOKEN"]

WASM_HEADER = b"\0asm\x01\0\0\0"
schemathesis.openapi.media_type(
    "application/wasm",
    st.sampled_from([WASM_HEADER, WASM_HEADER[:4], b""]) | st.binary(max_size=256).map(lambda tail: WASM_HEADER + tail),
)


def schemes(case):
    """The security schemes the document gives this operation."""
    security = case.operation.definition.raw.get("security") or []
    return {name for requirement in security for name in requirement}


@schemathesis.auth()
class Credentials:
    def get(self, case, context):
        return True

    def set(self, case, data, context):
        if "trader_signature" in schemes(case):
            case.headers = {**(case.headers or {}), "X-API-KEY": KEY}
        if "operator_token" in schemes(case):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}


class Sign:
    def __call__(self, request):
        timestamp = str(int(time.time() * 1000))
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        signed = b"\n".join([timestamp.encode(), request.method.encode(), request.path_url.encode(), body])
        request.headers["X-TIMESTAMP"] = timestamp
        request.headers["X-SIGNATURE-VERSION"] = "2"
        request.headers["X-SIGNATURE"] = hmac.new(SECRET, signed, hashlib.sha256).hexdigest()
        return request


def signs(case):
    """A trader operation whose case still carries the key."""
    return "trader_signature" in schemes(case) and (case.headers or {}).get("X-API-KEY") == KEY


@schemathesis.hook
def before_call(context, case, kwargs):
    if signs(case):
        kwargs["auth"] = Sign()
