#!/usr/bin/env python3
"""An exhost client in Python, standard library only.

It does what an integrator's first program does: sign requests (HMAC-SHA256,
signature version 2), place and cancel orders, and follow the order book over
the WebSocket with the checks a client should make (the snapshot's seq, then
diffs in increasing seq, none at or before the snapshot), then compare its
book with the host's.

    python3 examples/python/exhost_client.py --host http://127.0.0.1:8080 --token "$(cat exhost-data/admin.token)"

With --token it creates a trader and funds it (operator calls); with
--api-key/--api-secret it trades as that user instead.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


class ApiError(Exception):
    """An error answer: {"error": {"code", "message"}}, with its HTTP status."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Client:
    def __init__(self, base, api_key=None, api_secret=None, token=None):
        self.base = base.rstrip("/")
        self.api_key, self.api_secret, self.token = api_key, api_secret, token
        self._last_ts = 0

    def _timestamp_ms(self):
        # A state-changing signature counts once: never the same millisecond twice.
        now = int(time.time() * 1000)
        self._last_ts = max(now, self._last_ts + 1)
        return str(self._last_ts)

    def sign(self, method, path_with_query, body):
        """Headers of a version-2 signature: hex HMAC-SHA256(secret, ts \\n METHOD \\n path \\n body)."""
        ts = self._timestamp_ms()
        payload = "\n".join([ts, method, path_with_query, body]).encode()
        signature = hmac.new(self.api_secret.encode(), payload, hashlib.sha256).hexdigest()
        return {
            "X-API-KEY": self.api_key,
            "X-TIMESTAMP": ts,
            "X-SIGNATURE-VERSION": "2",
            "X-SIGNATURE": signature,
        }

    def request(self, method, path, body=None, auth="signed"):
        text = "" if body is None else json.dumps(body, separators=(",", ":"))
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if auth == "signed":
            headers.update(self.sign(method, path, text))
        elif auth == "operator":
            headers["Authorization"] = f"Bearer {self.token}"
        data = text.encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            answer = json.loads(error.read() or b"{}").get("error", {})
            raise ApiError(error.code, answer.get("code", "error"), answer.get("message", "")) from None

    # Trader calls.
    def place(self, symbol, side, price, qty, **extra):
        order = {"symbol": symbol, "side": side, "type": "limit", "price": price, "qty": qty, **extra}
        return self.request("POST", "/v1/orders", order)

    def cancel(self, order_id):
        return self.request("DELETE", f"/v1/orders/{order_id}")

    def open_orders(self, symbol):
        return self.request("GET", "/v1/orders?" + urllib.parse.urlencode({"symbol": symbol}))

    # Public market data.
    def book(self, symbol, depth=50):
        query = urllib.parse.urlencode({"depth": depth})
        return self.request("GET", f"/v1/markets/{urllib.parse.quote(symbol)}/book?{query}", auth=None)


class WebSocket:
    """Just enough of RFC 6455 for a JSON feed: the handshake, masked text
    frames out, text, ping and close frames in."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, base, path="/ws", timeout=10):
        url = urllib.parse.urlparse(base)
        self.sock = socket.create_connection((url.hostname, url.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the host closed the connection during the WebSocket handshake")
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError(f"no WebSocket upgrade: {lines[0]}")
        accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        fields = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        if fields.get("sec-websocket-accept") != accept:
            raise ConnectionError("the host's Sec-WebSocket-Accept does not match the key sent")

    def _read(self, count):
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the host closed the WebSocket")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _send_frame(self, opcode, payload):
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, value):
        self._send_frame(0x1, json.dumps(value).encode())

    def receive(self):
        """The next JSON message (pings are answered on the way)."""
        message = b""
        while True:
            first, second = self._read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:
                self._send_frame(0xA, payload)
            elif opcode == 0x8:
                raise ConnectionError("the host closed the WebSocket")
            elif opcode in (0x0, 0x1):
                message += payload
                if first & 0x80:
                    return json.loads(message)

    def close(self):
        try:
            self._send_frame(0x8, b"")
        finally:
            self.sock.close()


class BookFollower:
    """A local copy of one market's book from the `book` channel."""

    def __init__(self, ws, symbol):
        self.ws, self.symbol = ws, symbol
        ws.send({"op": "subscribe", "channel": "book", "symbol": symbol})
        while True:
            message = ws.receive()
            if message.get("channel") == "book" and message.get("type") == "snapshot":
                break
            if message.get("type") == "error":
                raise ApiError(0, message.get("code"), message.get("message"))
        self.seq = message["seq"]
        self.bids = {price: qty for price, qty in message["bids"]}
        self.asks = {price: qty for price, qty in message["asks"]}
        self.diffs = 0

    def apply(self, message):
        """Apply one diff, after the checks: later than everything applied so far."""
        if message["seq"] <= self.seq:
            raise RuntimeError(f"diff at seq {message['seq']} is not after {self.seq}: a message is out of order")
        for levels, side in ((message["bids"], self.bids), (message["asks"], self.asks)):
            for price, qty in levels:
                # A level's new total; zero means it is gone.
                if decimal_is_zero(qty):
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.seq = message["seq"]
        self.diffs += 1

    def follow_to(self, seq, timeout=10):
        """Apply diffs until the book is at `seq` or later."""
        deadline = time.time() + timeout
        while self.seq < seq:
            if time.time() > deadline:
                raise TimeoutError(f"the book feed did not reach seq {seq} (at {self.seq})")
            message = self.ws.receive()
            if message.get("channel") == "book" and message.get("type") == "diff" and message["symbol"] == self.symbol:
                self.apply(message)

    def levels(self):
        """Best first, as the REST book lists them."""
        by_price = lambda item: float(item[0])  # noqa: E731 (ordering only; values stay strings)
        bids = sorted(self.bids.items(), key=by_price, reverse=True)
        asks = sorted(self.asks.items(), key=by_price)
        return [list(level) for level in bids], [list(level) for level in asks]


def decimal_is_zero(text):
    return text.strip("0").strip(".") == ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("EXHOST_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--token", default=os.environ.get("EXHOST_ADMIN_TOKEN"), help="operator token: make a funded trader")
    parser.add_argument("--api-key")
    parser.add_argument("--api-secret")
    parser.add_argument("--symbol", default="BTC-PERP")
    args = parser.parse_args()

    if args.api_key and args.api_secret:
        client = Client(args.host, args.api_key, args.api_secret)
    elif args.token:
        operator = Client(args.host, token=args.token)
        user = operator.request("POST", "/admin/v1/users", {}, auth="operator")
        operator.request(
            "POST", "/admin/v1/deposits", {"user_id": user["user_id"], "asset": "USD", "amount": "10000"}, auth="operator"
        )
        print(f"created user {user['user_id']} and deposited 10000 USD")
        client = Client(args.host, user["api_key"], user["api_secret"])
    else:
        sys.exit("give --token (the operator token) or --api-key and --api-secret")

    ws = WebSocket(args.host)
    book = BookFollower(ws, args.symbol)
    print(f"book snapshot at seq {book.seq}: {len(book.bids)} bids, {len(book.asks)} asks")

    first = client.place(args.symbol, "buy", "26000.0", "0.010", client_order_id=f"py-{int(time.time() * 1000)}")
    second = client.place(args.symbol, "buy", "25900.0", "0.020")
    print(f"placed order {first['order_id']} ({first['status']}) and {second['order_id']} ({second['status']})")
    cancelled = client.cancel(first["order_id"])
    print(f"cancelled order {cancelled['order_id']} at seq {cancelled['seq']} ({cancelled['status']})")
    open_ids = sorted(order["order_id"] for order in client.open_orders(args.symbol))
    print(f"open orders: {open_ids}")

    # A refusal is an error with a code, and changes nothing.
    try:
        client.place(args.symbol, "buy", "26000.05", "0.010")
    except ApiError as error:
        print(f"refused as expected: {error.code}")

    book.follow_to(cancelled["seq"])
    rest = client.book(args.symbol)
    bids, asks = book.levels()
    ws.close()
    if rest["seq"] == book.seq and [bids, asks] != [rest["bids"], rest["asks"]]:
        sys.exit(f"the followed book differs from the host's at seq {book.seq}: {bids} {asks} against {rest}")
    print(f"book in step at seq {book.seq} after {book.diffs} diffs: best bid {bids[0] if bids else None}")


if __name__ == "__main__":
    main()
