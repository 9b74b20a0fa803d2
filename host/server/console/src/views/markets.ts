//! `#/`: every market with its last price and 24 h volume. The ticker
//! endpoint gives both; on a host without it the last price comes from the
//! newest trade and the volume is shown as not available (never guessed).

import { ApiError, get, type Market, type Ticker, type Trade } from "../api";
import { h, mount, shortHash } from "../dom";
import type { View } from "../shell";
import { every, failure, num, panel } from "./common";

const REFRESH_MS = 3_000;

interface Row {
  market: Market;
  last: string | null;
  volume: string | null;
  trades: number | null;
}

async function rowOf(market: Market): Promise<Row> {
  const path = `/v1/markets/${encodeURIComponent(market.symbol)}`;
  try {
    const ticker = await get<Ticker>(`${path}/ticker`);
    return { market, last: ticker.last_price, volume: ticker.volume_24h, trades: ticker.trades_24h };
  } catch (error) {
    // Without a ticker (an older host, or a failed one) the newest trade still gives the last price.
    if (!(error instanceof ApiError && error.endpointMissing)) console.warn(`ticker ${market.symbol}: ${error}`);
  }
  const [newest] = await get<Trade[]>(`${path}/trades?limit=1`);
  return { market, last: newest?.price ?? null, volume: null, trades: null };
}

export function marketsView(): View {
  const body = h("div", { class: "panel-body-inner" }, h("div", { class: "loading" }, "Loading markets…"));
  const element = h("div", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "Markets"), h("p", { class: "sub" }, "Click a market for its live order book, depth and trades.")),
    panel("All markets", body, { "data-testid": "markets" }));

  const stop = every(REFRESH_MS, async () => {
    try {
      const markets = await get<Market[]>("/v1/markets");
      const rows = await Promise.all(markets.map(rowOf));
      mount(body, table(rows));
    } catch (error) {
      mount(body, failure(error, "Markets"));
    }
  });
  return { element, destroy: stop };
}

function table(rows: Row[]): HTMLElement {
  if (rows.length === 0) return h("div", { class: "muted-box" }, "No markets yet.");
  return h("table", { class: "grid-table" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Market"), h("th", {}, "Base / Quote"), h("th", {}, "Status"),
      h("th", { class: "r" }, "Last price"), h("th", { class: "r" }, "24h volume"), h("th", { class: "r" }, "24h trades"),
      h("th", { class: "r" }, "Tick"), h("th", { class: "r" }, "Lot"), h("th", {}, "Matching module"))),
    h("tbody", {}, rows.map(({ market, last, volume, trades }) => {
      const open = () => (location.hash = `#/market/${encodeURIComponent(market.symbol)}`);
      return h("tr", { class: "clickable", "data-testid": "market-row", "data-symbol": market.symbol, onclick: open },
        h("td", {}, h("a", { href: `#/market/${encodeURIComponent(market.symbol)}`, class: "symbol" }, market.symbol)),
        h("td", {}, `${market.base} / ${market.quote}`),
        h("td", {}, h("span", { class: `badge ${market.status === "active" ? "badge-ok" : "badge-warn"}` }, market.status)),
        h("td", { class: "r", "data-testid": "market-last" }, num(last)),
        h("td", { class: "r", "data-testid": "market-volume" },
          volume === null ? h("span", { class: "muted", title: "this host has no ticker endpoint" }, "n/a") : [num(volume), h("span", { class: "unit" }, ` ${market.base}`)]),
        h("td", { class: "r" }, trades === null ? h("span", { class: "muted" }, "n/a") : num(trades)),
        h("td", { class: "r" }, num(market.tick_size)),
        h("td", { class: "r" }, num(market.lot_size)),
        h("td", {}, shortHash(market.matching_module)));
    })));
}
