//! `#/market/SYMBOL`: one market live. The book follows the WebSocket `book`
//! channel (snapshot, then diffs in increasing seq); a diff out of sequence or
//! a closed socket means messages may be lost, so the view resubscribes for a
//! fresh snapshot. Every few seconds the followed book is also checked against
//! the host's own book at the same seq (`?at_seq=`), which catches what the seq
//! check cannot. Trades come from the `trades` channel, refetched over REST on
//! every (re)connect. Numbers are the host's strings; the depth chart alone
//! uses floats, for geometry.

import { ApiError, get, type Book, type Level, type Market, type Ticker, type Trade } from "../api";
import { BookFollower, sameLevels } from "../book";
import { add, sub } from "../decimal";
import { h, mount, s, timeOf } from "../dom";
import { Feed, type FeedStatus } from "../feed";
import { setConnection, type View } from "../shell";
import { every, failure, num } from "./common";

const LADDER_LEVELS = 12;
const DEPTH_CHART_LEVELS = 60;
const TRADES_SHOWN = 40;
const VERIFY_MS = 3_000;
const TICKER_MS = 3_000;

export function marketView(symbol: string): View {
  const follower = new BookFollower(symbol);
  const trades = new Map<number, Trade>();
  let market: Market | null = null;
  let feed: Feed | null = null;
  let verified: { seq: number; ok: boolean } | null = null;
  let resyncs = 0;
  let problem = "";
  let tickerState: TickerState = { ticker: null, missing: false };

  const head = h("div", { class: "market-head" }, h("h1", { class: "symbol" }, symbol));
  const stats = h("div", { class: "stats" });
  const bookMeta = h("span", { class: "panel-meta" });
  const ladder = h("div", { class: "ladder", "data-testid": "book" }, h("div", { class: "loading" }, "Waiting for the book…"));
  const depth = h("div", { class: "depth", "data-testid": "depth-chart" });
  const tradesBody = h("div", { class: "trades-wrap", "data-testid": "trades" }, h("div", { class: "loading" }, "Loading trades…"));
  const notice = h("div", { class: "notice-slot" });
  const feedInfo = h("div", { "data-testid": "feed-info" });

  const element = h("div", { class: "page market-page" },
    h("div", { class: "market-bar" }, head, stats),
    notice,
    h("div", { class: "market-grid" },
      h("section", { class: "panel panel-book" },
        h("div", { class: "panel-head" }, h("h2", {}, "Order book"), bookMeta),
        h("div", { class: "panel-body" }, ladder)),
      h("div", { class: "column" },
        h("section", { class: "panel panel-depth" },
          h("div", { class: "panel-head" }, h("h2", {}, "Depth"), h("span", { class: "panel-meta" }, "cumulative, both sides")),
          h("div", { class: "panel-body" }, depth)),
        h("section", { class: "panel panel-feed" },
          h("div", { class: "panel-head" }, h("h2", {}, "Book feed"), h("span", { class: "panel-meta" }, "WebSocket book channel, seq-checked")),
          h("div", { class: "panel-body" }, feedInfo))),
      h("section", { class: "panel panel-trades" },
        h("div", { class: "panel-head" }, h("h2", {}, "Recent trades"), h("span", { class: "panel-meta" }, "newest first")),
        h("div", { class: "panel-body" }, tradesBody))));

  const renderBook = () => {
    const { bids, asks } = follower.levels();
    renderLadder(ladder, follower.seq === null ? null : { bids, asks }, market);
    renderDepth(depth, bids.slice(0, DEPTH_CHART_LEVELS), asks.slice(0, DEPTH_CHART_LEVELS));
    renderBookMeta();
  };

  const renderBookMeta = () => {
    mount(bookMeta, h("span", { class: "seq", "data-testid": "book-seq", "data-seq": follower.seq ?? "" }, "seq ", num(follower.seq ?? "—")));
    const { bids, asks } = follower.levels();
    const depthOf = (levels: Level[]) => levels.reduce((total, [, qty]) => add(total, qty), "0");
    const unit = (text: string) => h("span", {}, num(text), h("span", { class: "unit" }, ` ${market?.base ?? ""}`));
    const check = verified === null ? h("span", { class: "muted" }, "not yet")
      : verified.ok ? h("span", { class: "ok", "data-testid": "book-verified" }, "✓ matches the host at seq ", num(verified.seq))
      : h("span", { class: "bad" }, "✗ differed at seq ", num(verified.seq), ", resubscribed");
    const rows: [string, Node | string][] = [
      ["Book seq", num(follower.seq ?? "—")],
      ["From snapshot at", follower.snapshotSeq === null ? h("span", { class: "muted" }, "waiting") : h("span", {}, "seq ", num(follower.snapshotSeq), h("span", { class: "muted" }, ` + ${plural(follower.diffs, "diff")}`))],
      ["Checked against REST", check],
      ["Resubscriptions", resyncs === 0 ? num(0) : h("span", { class: "warn", title: problem }, `${resyncs} (last: ${problem})`)],
      ["Best bid / ask", h("span", {}, h("span", { class: "num up" }, bids[0]?.[0] ?? "—"), h("span", { class: "muted" }, " / "), h("span", { class: "num down" }, asks[0]?.[0] ?? "—"))],
      ["Bid depth", unit(depthOf(bids))],
      ["Ask depth", unit(depthOf(asks))],
    ];
    mount(feedInfo, h("dl", { class: "kv kv-compact" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  };

  const showStats = () => {
    if (market !== null) renderStats(stats, market, tickerState, trades);
  };

  const renderTrades = () => {
    showStats();
    const list = [...trades.values()].sort((a, b) => b.seq - a.seq || b.trade_id - a.trade_id).slice(0, TRADES_SHOWN);
    for (const trade of trades.keys()) if (!list.some((t) => t.trade_id === trade)) trades.delete(trade);
    if (list.length === 0) {
      mount(tradesBody, h("div", { class: "muted-box" }, "No trades yet."));
      return;
    }
    mount(tradesBody, h("table", { class: "trades" },
      h("thead", {}, h("tr", {}, h("th", { class: "r" }, "Price"), h("th", { class: "r" }, "Qty"), h("th", {}, "Taker"), h("th", { class: "r" }, "Time"))),
      h("tbody", {}, list.map((t) =>
        h("tr", { "data-testid": "trade", "data-trade-id": t.trade_id, "data-price": t.price, "data-qty": t.qty, "data-side": t.taker_side },
          h("td", { class: `r num ${t.taker_side === "buy" ? "up" : "down"}` }, t.price),
          h("td", { class: "r num" }, t.qty),
          h("td", { class: t.taker_side === "buy" ? "up" : "down" }, t.taker_side),
          h("td", { class: "r num muted", title: `seq ${t.seq}, trade ${t.trade_id}` }, timeOf(t.ts)))))));
  };

  const refetchTrades = async () => {
    try {
      for (const trade of await get<Trade[]>(`/v1/markets/${encodeURIComponent(symbol)}/trades?limit=${TRADES_SHOWN}`)) {
        trades.set(trade.trade_id, trade);
      }
      renderTrades();
    } catch (error) {
      mount(tradesBody, failure(error, "Trades"));
    }
  };

  const resync = (why: string) => {
    resyncs += 1;
    problem = why;
    console.warn(`book ${symbol}: ${why}; resubscribing`);
    follower.reset();
    feed?.resync();
  };

  const onMessage = (message: any) => {
    if (message.type === "error") {
      mount(notice, failure(new ApiError(0, message.error?.code ?? "error", message.error?.message ?? ""), "Feed"));
      return;
    }
    if (message.channel === "book" && message.symbol === symbol) {
      if (message.type === "snapshot") {
        follower.snapshot(message.seq, message.bids, message.asks);
      } else if (message.type === "diff") {
        const broken = follower.diff(message.seq, message.bids, message.asks);
        if (broken) return resync(broken);
      }
      renderBook();
    } else if (message.channel === "trades" && message.data?.symbol === symbol) {
      trades.set(message.data.trade_id, message.data);
      renderTrades();
    }
  };

  const onStatus = (status: FeedStatus, detail: string) => {
    setConnection(status, detail);
    if (status === "reconnecting") {
      follower.reset();
      renderBook();
    }
  };

  // The market's own description first: an unknown symbol stops here.
  let stopTicker = () => {};
  let stopVerify = () => {};
  let destroyed = false;
  void (async () => {
    try {
      const markets = await get<Market[]>("/v1/markets");
      market = markets.find((m) => m.symbol === symbol) ?? null;
      // Not listed: let the host say why, in its own words.
      if (market === null) await get<Book>(`/v1/markets/${encodeURIComponent(symbol)}/book?depth=1`);
      if (market === null) throw new Error(`${symbol} is not among the host's markets`);
    } catch (error) {
      mount(element, h("div", { class: "market-bar" }, head), failure(error, "Market"),
        h("p", {}, h("a", { href: "#/" }, "← All markets")));
      return;
    }
    if (destroyed) return;
    mount(head, h("h1", { class: "symbol" }, symbol), h("span", { class: "pair" }, `${market.base} / ${market.quote}`));
    feed = new Feed(
      [{ channel: "trades", symbol }, { channel: "book", symbol }],
      { opened: () => void refetchTrades(), message: onMessage, status: onStatus },
    );
    stopTicker = every(TICKER_MS, async () => {
      try {
        tickerState = { ticker: await get<Ticker>(`/v1/markets/${encodeURIComponent(symbol)}/ticker`), missing: false };
      } catch (error) {
        tickerState = { ticker: null, missing: error instanceof ApiError && error.endpointMissing };
      }
      showStats();
    });
    stopVerify = every(VERIFY_MS, async () => {
      const seq = follower.seq;
      if (seq === null || verified?.seq === seq) return;
      try {
        const book = await get<Book>(`/v1/markets/${encodeURIComponent(symbol)}/book?depth=1000&at_seq=${seq}`);
        if (follower.seq !== seq) return; // moved on meanwhile; check again next time
        const ours = follower.levels();
        const ok = sameLevels(ours.bids.slice(0, 1000), book.bids) && sameLevels(ours.asks.slice(0, 1000), book.asks);
        verified = { seq, ok };
        if (!ok) resync(`the followed book differs from the host's at seq ${seq}`);
        renderBookMeta();
      } catch {
        // A host that cannot rebuild that seq: the seq checks alone remain.
      }
    });
  })();

  return {
    element,
    destroy() {
      destroyed = true;
      feed?.close();
      stopTicker();
      stopVerify();
    },
  };
}

const plural = (n: number, noun: string) => `${n} ${noun}${n === 1 ? "" : "s"}`;

function renderLadder(ladder: HTMLElement, book: { bids: Level[]; asks: Level[] } | null, market: Market | null): void {
  if (book === null) {
    mount(ladder, h("div", { class: "loading" }, "Waiting for the book snapshot…"));
    return;
  }
  const asks = book.asks.slice(0, LADDER_LEVELS);
  const bids = book.bids.slice(0, LADDER_LEVELS);
  const cumulative = (levels: Level[]) => {
    let total = "0";
    return levels.map(([, qty]) => (total = add(total, qty)));
  };
  const askTotals = cumulative(asks);
  const bidTotals = cumulative(bids);
  // Depth bars in proportion to the larger side's cumulative quantity (geometry only).
  const widest = Math.max(Number(askTotals.at(-1) ?? 0), Number(bidTotals.at(-1) ?? 0)) || 1;
  const row = (side: "bid" | "ask", [price, qty]: Level, total: string) => {
    const tr = h("tr", { class: `level ${side}`, "data-testid": "book-level", "data-side": side, "data-price": price, "data-qty": qty },
      h("td", { class: "r num price" }, price),
      h("td", { class: "r num" }, qty),
      h("td", { class: "r num muted" }, total));
    // Through the CSSOM, not a style attribute: allowed under a strict Content-Security-Policy.
    tr.style.setProperty("--depth", `${((Number(total) / widest) * 100).toFixed(2)}%`);
    return tr;
  };
  const blank = (side: string) => h("tr", { class: `level empty ${side}` }, h("td", { colspan: 3 }, "\u00a0"));
  const pad = (n: number, side: string) => Array.from({ length: Math.max(0, LADDER_LEVELS - n) }, () => blank(side));

  const spread = asks.length && bids.length ? sub(asks[0][0], bids[0][0]) : null;
  const base = market?.base ?? "";
  const quote = market?.quote ?? "";
  mount(ladder, h("table", { class: "book" },
    h("thead", {}, h("tr", {},
      h("th", { class: "r" }, `Price (${quote})`), h("th", { class: "r" }, `Size (${base})`), h("th", { class: "r" }, `Total (${base})`))),
    h("tbody", { class: "asks", "data-testid": "asks" }, pad(asks.length, "ask"), asks.map((level, i) => row("ask", level, askTotals[i])).reverse()),
    h("tbody", { class: "mid" }, h("tr", {}, h("td", { colspan: 3 },
      h("div", { class: "spread", "data-testid": "spread" },
        spread === null ? h("span", { class: "muted" }, book.asks.length || book.bids.length ? "one-sided book" : "empty book")
          : h("span", {}, h("span", { class: "muted" }, "Spread "), num(spread)),
        h("span", { class: "muted" }, `${plural(book.bids.length, "bid level")} · ${plural(book.asks.length, "ask level")}`))))),
    h("tbody", { class: "bids", "data-testid": "bids" }, bids.map((level, i) => row("bid", level, bidTotals[i])), pad(bids.length, "bid"))));
}

function renderDepth(container: HTMLElement, bids: Level[], asks: Level[]): void {
  const width = 600;
  const height = 320;
  const pad = { left: 10, right: 10, top: 30, bottom: 28 };
  if (bids.length === 0 && asks.length === 0) {
    mount(container, h("div", { class: "muted-box" }, "No resting orders."));
    return;
  }
  // Exact cumulative totals for the labels; floats only to place them.
  const steps = (levels: Level[]) => {
    let exact = "0";
    return levels.map(([price, qty]) => {
      exact = add(exact, qty);
      return { price, total: exact, p: Number(price), q: Number(exact) };
    });
  };
  const b = steps(bids);
  const a = steps(asks);
  // Centred on the mid price (or the one side's best), wide enough for both sides.
  const mid = b.length && a.length ? (b[0].p + a[0].p) / 2 : (b[0] ?? a[0]).p;
  const reach = Math.max(mid - (b.at(-1)?.p ?? mid), (a.at(-1)?.p ?? mid) - mid, mid * 0.0005, 1) * 1.15;
  const low = mid - reach;
  const high = mid + reach;
  const top = Math.max(b.at(-1)?.q ?? 0, a.at(-1)?.q ?? 0) * 1.12 || 1;
  const x = (p: number) => pad.left + ((p - low) / (high - low)) * (width - pad.left - pad.right);
  const y = (q: number) => height - pad.bottom - (q / top) * (height - pad.top - pad.bottom);
  const floor = y(0);
  const f = (n: number) => n.toFixed(1);

  // Bids step down to the left from the best bid; asks step up to the right.
  const path = (points: { p: number; q: number }[], toward: number) => {
    let d = `M${f(x(points[0].p))},${f(floor)}`;
    let previous = 0;
    for (const { p, q } of points) {
      d += ` L${f(x(p))},${f(y(previous))} L${f(x(p))},${f(y(q))}`;
      previous = q;
    }
    return `${d} L${f(x(toward))},${f(y(previous))} L${f(x(toward))},${f(floor)} Z`;
  };
  // A label kept inside the chart: about 6.6 px per character at 11 px monospace.
  const label = (at: number, text: string, anchor: "start" | "end" | "middle", cls: string, row = height - 9) => {
    const w = text.length * 6.6;
    const left = anchor === "start" ? at : anchor === "end" ? at - w : at - w / 2;
    const shift = Math.max(pad.left - left, 0) - Math.max(left + w - (width - pad.right), 0);
    return s("text", { x: f(at + shift), y: row, "text-anchor": anchor, class: `axis ${cls}` }, text);
  };
  const grid = [0.25, 0.5, 0.75, 1].map((k) => s("line", { x1: pad.left, x2: width - pad.right, y1: f(y((top / 1.12) * k)), y2: f(y((top / 1.12) * k)), class: "gridline" }));
  const bidTotal = b.at(-1)?.total ?? "0";
  const askTotal = a.at(-1)?.total ?? "0";

  const cross = s("line", { x1: 0, x2: 0, y1: pad.top - 6, y2: floor, class: "crosshair", visibility: "hidden" });
  const readout = s("text", { x: width / 2, y: 16, "text-anchor": "middle", class: "axis readout" }, "");
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "depth-svg", role: "img",
    "aria-label": `Cumulative depth: ${bidTotal} bid, ${askTotal} ask` },
    grid,
    s("line", { x1: pad.left, x2: width - pad.right, y1: f(floor), y2: f(floor), class: "baseline" }),
    s("line", { x1: f(x(mid)), x2: f(x(mid)), y1: pad.top - 6, y2: f(floor), class: "midline" }),
    b.length ? s("path", { d: path(b, low), class: "area-bid" }) : null,
    a.length ? s("path", { d: path(a, high), class: "area-ask" }) : null,
    b.length ? label(x(b[0].p) - 6, b[0].price, "end", "up") : null,
    a.length ? label(x(a[0].p) + 6, a[0].price, "start", "down") : null,
    b.length ? s("text", { x: pad.left, y: 16, class: "axis up" }, `bids ${bidTotal}`) : null,
    a.length ? s("text", { x: width - pad.right, y: 16, "text-anchor": "end", class: "axis down" }, `asks ${askTotal}`) : null,
    cross, readout);

  // Hover: the exact cumulative quantity up to the level under the pointer.
  svg.addEventListener("mousemove", (event: MouseEvent) => {
    const box = svg.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * width;
    const price = low + ((px - pad.left) / (width - pad.left - pad.right)) * (high - low);
    const side = price <= mid ? b.filter((l) => l.p >= price) : a.filter((l) => l.p <= price);
    const level = side.at(-1);
    if (!level) {
      cross.setAttribute("visibility", "hidden");
      readout.textContent = "";
      return;
    }
    cross.setAttribute("x1", f(x(level.p)));
    cross.setAttribute("x2", f(x(level.p)));
    cross.setAttribute("visibility", "visible");
    readout.textContent = `${price <= mid ? "bids ≥" : "asks ≤"} ${level.price}: ${level.total}`;
  });
  svg.addEventListener("mouseleave", () => {
    cross.setAttribute("visibility", "hidden");
    readout.textContent = "";
  });
  mount(container, svg);
}

interface TickerState {
  ticker: Ticker | null;
  /** Why there is no ticker: the host has no such endpoint, or it failed. */
  missing: boolean;
}

function renderStats(stats: HTMLElement, market: Market, state: TickerState, trades: Map<number, Trade>): void {
  const stat = (label: string, value: Node | string, testid?: string) =>
    h("div", { class: "stat", "data-testid": testid }, h("span", { class: "stat-label" }, label), h("span", { class: "stat-value" }, value));
  const { ticker, missing } = state;
  const newest = [...trades.values()].sort((a, b) => b.seq - a.seq || b.trade_id - a.trade_id)[0];
  // The newest trade seen live is at least as recent as the last ticker poll.
  const last = newest?.price ?? ticker?.last_price ?? null;
  const na = () => h("span", { class: "muted", title: missing ? "this host has no ticker endpoint" : "the ticker did not answer" }, "n/a");
  const direction = newest ? (newest.taker_side === "buy" ? "up" : "down") : "";
  mount(stats,
    stat("Last", h("span", { class: `num big ${direction}` }, last ?? "—"), "last-price"),
    stat("24h volume", ticker ? h("span", {}, num(ticker.volume_24h), h("span", { class: "unit" }, ` ${market.base}`),
      ticker.partial ? h("span", { class: "warn", title: "a very busy day: the figures cover only the newest trades" }, " partial") : null) : na()),
    stat("24h high", ticker ? num(ticker.high_24h) : na()),
    stat("24h low", ticker ? num(ticker.low_24h) : na()),
    stat("24h trades", ticker ? num(ticker.trades_24h) : na()),
    stat("Tick / lot", h("span", {}, num(market.tick_size), h("span", { class: "muted" }, " / "), num(market.lot_size))));
}
