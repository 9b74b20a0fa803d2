// An exhost client in TypeScript on Node's built-ins (fetch, node:crypto,
// and the WebSocket of Node 20's --experimental-websocket, built in from 22).
//
// It signs requests (HMAC-SHA256, signature version 2), places and cancels
// orders, follows the order book over the WebSocket with the checks a client
// should make (the snapshot's seq, then diffs in increasing seq, none at or
// before the snapshot), and compares its book with the host's.
//
//   cd examples/typescript && npm ci && npm run build
//   node --experimental-websocket dist/exhost_client.js --host http://127.0.0.1:8080 --token "$TOKEN"
//
// With --token it creates a trader and funds it (operator calls); with
// --api-key and --api-secret it trades as that user instead.

import { createHmac } from "node:crypto";
import { parseArgs } from "node:util";

type Level = [string, string];
type Json = Record<string, any>;

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`${status} ${code}: ${message}`);
  }
}

type Auth = "signed" | "operator" | "public";

class Client {
  private lastTimestampMs = 0;

  constructor(
    readonly base: string,
    readonly apiKey?: string,
    readonly apiSecret?: string,
    readonly token?: string,
  ) {}

  // A state-changing signature counts once: never the same millisecond twice.
  private timestampMs(): string {
    this.lastTimestampMs = Math.max(Date.now(), this.lastTimestampMs + 1);
    return String(this.lastTimestampMs);
  }

  /** Headers of a version-2 signature: hex HMAC-SHA256(secret, ts \n METHOD \n path \n body). */
  sign(method: string, pathWithQuery: string, body: string): Record<string, string> {
    const timestamp = this.timestampMs();
    const signature = createHmac("sha256", this.apiSecret ?? "")
      .update([timestamp, method, pathWithQuery, body].join("\n"))
      .digest("hex");
    return {
      "X-API-KEY": this.apiKey ?? "",
      "X-TIMESTAMP": timestamp,
      "X-SIGNATURE-VERSION": "2",
      "X-SIGNATURE": signature,
    };
  }

  async request(method: string, path: string, body?: Json, auth: Auth = "signed"): Promise<any> {
    const text = body === undefined ? "" : JSON.stringify(body);
    const headers: Record<string, string> = body === undefined ? {} : { "Content-Type": "application/json" };
    if (auth === "signed") Object.assign(headers, this.sign(method, path, text));
    if (auth === "operator") headers["Authorization"] = `Bearer ${this.token}`;
    const response = await fetch(this.base + path, { method, headers, body: body === undefined ? undefined : text });
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      throw new ApiError(response.status, answer?.error?.code ?? "error", answer?.error?.message ?? "");
    }
    return answer;
  }

  place(symbol: string, side: "buy" | "sell", price: string, qty: string, extra: Json = {}) {
    return this.request("POST", "/v1/orders", { symbol, side, type: "limit", price, qty, ...extra });
  }

  cancel(orderId: number) {
    return this.request("DELETE", `/v1/orders/${orderId}`);
  }

  openOrders(symbol: string) {
    return this.request("GET", `/v1/orders?symbol=${encodeURIComponent(symbol)}`);
  }

  book(symbol: string, depth = 50) {
    return this.request("GET", `/v1/markets/${encodeURIComponent(symbol)}/book?depth=${depth}`, undefined, "public");
  }
}

/** One market's book from the `book` channel, with the seq checks. */
class BookFollower {
  seq = 0;
  diffs = 0;
  private bids = new Map<string, string>();
  private asks = new Map<string, string>();
  private waiting: { seq: number; resolve: () => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;

  private constructor(
    private readonly ws: WebSocket,
    readonly symbol: string,
  ) {}

  static open(base: string, symbol: string): Promise<BookFollower> {
    const ws = new WebSocket(base.replace(/^http/, "ws") + "/ws");
    const follower = new BookFollower(ws, symbol);
    return new Promise((resolve, reject) => {
      ws.onerror = () => reject(new Error(`could not open the WebSocket at ${base}/ws`));
      ws.onopen = () => ws.send(JSON.stringify({ op: "subscribe", channel: "book", symbol }));
      ws.onmessage = (event: MessageEvent) => {
        const message = JSON.parse(String(event.data));
        if (message.type === "error") return reject(new ApiError(0, message.code, message.message));
        if (message.channel !== "book" || message.symbol !== symbol) return;
        if (message.type === "snapshot") {
          follower.seq = message.seq;
          for (const [price, qty] of message.bids as Level[]) follower.bids.set(price, qty);
          for (const [price, qty] of message.asks as Level[]) follower.asks.set(price, qty);
          resolve(follower);
        } else if (message.type === "diff") {
          follower.apply(message);
        }
      };
    });
  }

  private apply(message: Json) {
    if (message.seq <= this.seq) {
      this.fail(new Error(`diff at seq ${message.seq} is not after ${this.seq}: a message is out of order`));
      return;
    }
    for (const [levels, side] of [
      [message.bids, this.bids],
      [message.asks, this.asks],
    ] as [Level[], Map<string, string>][]) {
      // A level's new total; zero means it is gone.
      for (const [price, qty] of levels) {
        if (Number(qty) === 0) side.delete(price);
        else side.set(price, qty);
      }
    }
    this.seq = message.seq;
    this.diffs += 1;
    if (this.waiting && this.seq >= this.waiting.seq) {
      this.waiting.resolve();
      this.waiting = null;
    }
  }

  private fail(error: Error) {
    this.failure = error;
    this.waiting?.reject(error);
  }

  /** Resolves once the book is at `seq` or later. */
  followTo(seq: number, timeoutMs = 10_000): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.seq >= seq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the book feed did not reach seq ${seq} (at ${this.seq})`)), timeoutMs);
      this.waiting = {
        seq,
        resolve: () => (clearTimeout(timer), resolve()),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
    });
  }

  /** Best first, as the REST book lists them. */
  levels(): [Level[], Level[]] {
    const sorted = (side: Map<string, string>, descending: boolean) =>
      [...side.entries()].sort((a, b) => (Number(a[0]) - Number(b[0])) * (descending ? -1 : 1)) as Level[];
    return [sorted(this.bids, true), sorted(this.asks, false)];
  }

  close() {
    this.ws.close();
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      host: { type: "string", default: process.env.EXHOST_URL ?? "http://127.0.0.1:8080" },
      token: { type: "string", default: process.env.EXHOST_ADMIN_TOKEN },
      "api-key": { type: "string" },
      "api-secret": { type: "string" },
      symbol: { type: "string", default: "BTC-PERP" },
    },
  });
  const host = values.host!.replace(/\/$/, "");
  const symbol = values.symbol!;
  let client: Client;
  if (values["api-key"] && values["api-secret"]) {
    client = new Client(host, values["api-key"], values["api-secret"]);
  } else if (values.token) {
    const operator = new Client(host, undefined, undefined, values.token);
    const user = await operator.request("POST", "/admin/v1/users", {}, "operator");
    await operator.request("POST", "/admin/v1/deposits", { user_id: user.user_id, asset: "USD", amount: "10000" }, "operator");
    console.log(`created user ${user.user_id} and deposited 10000 USD`);
    client = new Client(host, user.api_key, user.api_secret);
  } else {
    throw new Error("give --token (the operator token) or --api-key and --api-secret");
  }

  const book = await BookFollower.open(host, symbol);
  console.log(`book snapshot at seq ${book.seq}`);
  const first = await client.place(symbol, "sell", "28000.0", "0.010", { client_order_id: `ts-${Date.now()}` });
  const second = await client.place(symbol, "sell", "28100.0", "0.030");
  console.log(`placed order ${first.order_id} (${first.status}) and ${second.order_id} (${second.status})`);
  const cancelled = await client.cancel(first.order_id);
  console.log(`cancelled order ${cancelled.order_id} at seq ${cancelled.seq} (${cancelled.status})`);
  const open = (await client.openOrders(symbol)).map((order: Json) => order.order_id);
  console.log(`open orders: ${JSON.stringify(open)}`);

  // A refusal is an error with a code, and changes nothing.
  try {
    await client.place(symbol, "sell", "28000.05", "0.010");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    console.log(`refused as expected: ${error.code}`);
  }

  await book.followTo(cancelled.seq);
  const rest = await client.book(symbol);
  const [bids, asks] = book.levels();
  book.close();
  if (rest.seq === book.seq && JSON.stringify([bids, asks]) !== JSON.stringify([rest.bids, rest.asks])) {
    throw new Error(`the followed book differs from the host's at seq ${book.seq}: ${JSON.stringify([bids, asks])} against ${JSON.stringify(rest)}`);
  }
  console.log(`book in step at seq ${book.seq} after ${book.diffs} diffs: best ask ${JSON.stringify(asks[0] ?? null)}`);
}

main().catch((error) => {
  console.error(`error: ${error instanceof Error ? error.message : error}`);
  process.exit(1);
});
