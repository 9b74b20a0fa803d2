//! The reconciliation service behind `src/bin/reconcile.rs`.
//!
//! It rebuilds positions and balances from the event stream with its own
//! implementation of the rules in `docs/positions.md`:
//! - a fill changes `size` and the cost basis `cost = Σ price × signed qty`;
//!   closing `q` of `size` releases `cost × q / |size|` (truncated) and
//!   realizes `−price × Δ − released`, times the contract multiplier;
//! - fees are `ceil(notional × rate / 1e8)` with the market's maker and taker
//!   rates, deleveraging pays none;
//! - funding moves a market's index by `mark × multiplier × rate`; a position
//!   settles `size × (index − its index) / 1e8` (payers rounded up, receivers
//!   down) just before it changes, and where a `funding_settled` message says
//!   so (a withdrawal, a liquidation);
//! - deposits come from `deposit` events; withdrawals, liquidation fees and
//!   insurance payouts are taken from `balance` events (they are decisions,
//!   not arithmetic).
//!
//! - the maintenance margin is `ceil((|size| × mark × multiplier × rate −
//!   amount) / 1e8)` per position, with the rate and cumulative amount of
//!   the market's tier for that notional (one flat tier without `tiers`),
//!   at the last `mark_price` of the stream (index-derived or not).
//!
//! After every command it compares its numbers with the `balance` and
//! `position` change messages of that command, and at the end with the host's
//! account answers (balance, sizes, realized PnL, maintenance margin).

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::decimal::{parse, places_of};

const RATE_SCALE: i128 = 100_000_000;

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub users: usize,
    pub events: u64,
    pub through_seq: u64,
    pub lines: Vec<String>,
    pub mismatches: Vec<String>,
}

struct Market {
    price_places: u32,
    qty_places: u32,
    tick: i128,
    lot: i128,
    /// Settlement units per (one tick × one lot).
    multiplier: i128,
    maker_fee: i128,
    taker_fee: i128,
    /// Maintenance tiers: (upper bound of notional in money units, rate), ascending.
    maintenance_tiers: Vec<(i128, i128)>,
}

impl Market {
    /// Maintenance margin of a position of `notional` money units.
    fn maintenance(&self, notional: i128) -> i128 {
        let mut amount = 0;
        for (index, &(bound, rate)) in self.maintenance_tiers.iter().enumerate() {
            if index > 0 {
                let (below_bound, below_rate) = self.maintenance_tiers[index - 1];
                amount += below_bound * (rate - below_rate);
            }
            if notional <= bound || index + 1 == self.maintenance_tiers.len() {
                return ceil_div(notional * rate - amount, RATE_SCALE);
            }
        }
        0
    }

    fn ticks(&self, price: &Value) -> anyhow::Result<i128> {
        Ok(parse(text(price)?, self.price_places)? / self.tick)
    }

    fn lots(&self, qty: &Value) -> anyhow::Result<i128> {
        Ok(parse(text(qty)?, self.qty_places)? / self.lot)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Position {
    size: i128,
    cost: i128,
    realized: i128,
    /// The market's funding index when this position last settled.
    index: i128,
}

struct Books {
    markets: BTreeMap<String, Market>,
    money_places: u32,
    positions: BTreeMap<(u64, String), Position>,
    balances: BTreeMap<u64, i128>,
    /// The last mark of each market, ticks.
    marks: BTreeMap<String, i128>,
    /// Each market's cumulative funding index (units × 1e8 per lot long).
    funding_index: BTreeMap<String, i128>,
}

fn text(value: &Value) -> anyhow::Result<&str> {
    value.as_str().with_context(|| format!("expected a decimal string, got {value}"))
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let quotient = a.div_euclid(b);
    if a.rem_euclid(b) == 0 { quotient } else { quotient + 1 }
}

impl Books {
    /// Settle a position's funding up to `index`: what it owes since its last settlement.
    fn settle(&mut self, user: u64, symbol: &str, index: i128) -> i128 {
        let position = self.positions.entry((user, symbol.to_string())).or_default();
        let owed = position.size * (index - position.index);
        position.index = index;
        let amount = -ceil_div(owed, RATE_SCALE);
        *self.balances.entry(user).or_default() += amount;
        amount
    }

    fn fill(&mut self, user: u64, symbol: &str, buy: bool, qty: i128, price: i128, fee_rate: i128) {
        let index = self.funding_index.get(symbol).copied().unwrap_or(0);
        self.settle(user, symbol, index);
        let market = &self.markets[symbol];
        let k = market.multiplier;
        let delta = if buy { qty } else { -qty };
        let position = self.positions.entry((user, symbol.to_string())).or_default();
        let mut realized = 0;
        let closing = if position.size != 0 && (position.size > 0) != (delta > 0) {
            delta.abs().min(position.size.abs())
        } else {
            0
        };
        if closing > 0 {
            let released = position.cost * closing / position.size.abs();
            let closed = if delta > 0 { closing } else { -closing };
            realized = (-price * closed - released) * k;
            position.size += closed;
            position.cost -= released;
        }
        let opening = delta.abs() - closing;
        if opening > 0 {
            let opened = if delta > 0 { opening } else { -opening };
            position.size += opened;
            position.cost += price * opened;
        }
        position.realized += realized;
        let fee = ceil_div(qty * price * k * fee_rate, RATE_SCALE);
        *self.balances.entry(user).or_default() += realized - fee;
    }

    fn apply(&mut self, event: &Value) -> anyhow::Result<()> {
        let user = |key: &str| event[key].as_u64().with_context(|| format!("{key} in {event}"));
        let symbol = event["symbol"].as_str().unwrap_or_default().to_string();
        match event["type"].as_str().unwrap_or_default() {
            "deposit" => {
                let amount = parse(text(&event["amount"])?, self.money_places)?;
                *self.balances.entry(user("user_id")?).or_default() += amount;
            }
            "trade" => {
                let market = &self.markets[&symbol];
                let (qty, price) = (market.lots(&event["qty"])?, market.ticks(&event["price"])?);
                let (maker_fee, taker_fee) = (market.maker_fee, market.taker_fee);
                let taker_buys = event["taker_side"] == "buy";
                self.fill(user("maker_user_id")?, &symbol, !taker_buys, qty, price, maker_fee);
                self.fill(user("taker_user_id")?, &symbol, taker_buys, qty, price, taker_fee);
            }
            "auto_deleverage" => {
                let market = &self.markets[&symbol];
                let (qty, price) = (market.lots(&event["qty"])?, market.ticks(&event["price"])?);
                let liquidated_buys = event["liquidated_side"] == "buy";
                self.fill(user("liquidated_user_id")?, &symbol, liquidated_buys, qty, price, 0);
                self.fill(user("counterparty_user_id")?, &symbol, !liquidated_buys, qty, price, 0);
            }
            "funding" if event.get("index").is_some() => {
                let market = &self.markets[&symbol];
                let rate = parse(text(&event["rate"])?, 8)?;
                let delta = market.ticks(&event["mark_price"])? * market.multiplier * rate;
                let index = self.funding_index.entry(symbol.clone()).or_default();
                *index += delta;
                let host: i128 = text(&event["index"])?.parse()?;
                if host != *index {
                    bail!("{symbol}: host funding index {host}, rebuilt {index}");
                }
            }
            "funding_settled" => {
                let index: i128 = text(&event["index"])?.parse()?;
                let user = user("user_id")?;
                if self.positions.get(&(user, symbol.clone())).is_none_or(|position| position.index != index) {
                    let amount = self.settle(user, &symbol, index);
                    let host = parse(text(&event["amount"])?, self.money_places)?;
                    if host != amount {
                        bail!("user {user} {symbol}: host settled {host}, rebuilt {amount}");
                    }
                }
            }
            // Modules before position state v3 paid funding to every holder at once.
            "funding" => {
                let market = &self.markets[&symbol];
                let rate = parse(text(&event["rate"])?, 8)?;
                let mark = market.ticks(&event["mark_price"])?;
                let k = market.multiplier;
                let holders: Vec<(u64, i128)> = self
                    .positions
                    .iter()
                    .filter(|((_, s), p)| *s == symbol && p.size != 0)
                    .map(|((u, _), p)| (*u, p.size))
                    .collect();
                for (holder, size) in holders {
                    let owed = size * mark * k * rate;
                    let change = if owed > 0 { -ceil_div(owed, RATE_SCALE) } else { (-owed) / RATE_SCALE };
                    *self.balances.entry(holder).or_default() += change;
                }
            }
            "mark_price" => {
                let mark = self.markets[&symbol].ticks(&event["price"])?;
                self.marks.insert(symbol, mark);
            }
            "balance" => {
                let cause = event["cause"].as_str().unwrap_or_default();
                if matches!(cause, "withdrawal" | "liquidation_fee" | "insurance_payout") {
                    let delta = parse(text(&event["delta"])?, self.money_places)?;
                    *self.balances.entry(user("user_id")?).or_default() += delta;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Compare with the last `balance` and `position` messages of one command.
    fn check_command(&self, events: &[Value], report: &mut Report) -> anyhow::Result<()> {
        let mut balances: BTreeMap<u64, i128> = BTreeMap::new();
        let mut positions: BTreeMap<(u64, String), (i128, i128)> = BTreeMap::new();
        for event in events {
            match event["type"].as_str().unwrap_or_default() {
                "balance" => {
                    balances.insert(
                        event["user_id"].as_u64().unwrap_or(0),
                        parse(text(&event["balance"])?, self.money_places)?,
                    );
                }
                "position" => {
                    let symbol = event["symbol"].as_str().unwrap_or_default().to_string();
                    let market = &self.markets[&symbol];
                    let size = parse(text(&event["size"])?, market.qty_places)? / market.lot;
                    let cost: i128 = text(&event["cost"])?.parse()?;
                    positions.insert((event["user_id"].as_u64().unwrap_or(0), symbol), (size, cost));
                }
                _ => {}
            }
        }
        let seq = events.first().and_then(|e| e["seq"].as_u64()).unwrap_or(0);
        for (user, balance) in balances {
            let mine = self.balances.get(&user).copied().unwrap_or(0);
            if mine != balance {
                report.mismatches.push(format!("seq {seq}: user {user} balance: host {balance}, rebuilt {mine}"));
            }
        }
        for ((user, symbol), (size, cost)) in positions {
            let mine = self.positions.get(&(user, symbol.clone())).copied().unwrap_or_default();
            if (mine.size, mine.cost) != (size, cost) {
                report.mismatches.push(format!(
                    "seq {seq}: user {user} {symbol}: host size {size} cost {cost}, rebuilt size {} cost {}",
                    mine.size, mine.cost
                ));
            }
        }
        Ok(())
    }
}

fn get(agent: &ureq::Agent, base: &str, token: &str, path: &str) -> anyhow::Result<Value> {
    let mut response = agent
        .get(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .with_context(|| format!("GET {path}"))?;
    let status = response.status();
    let body: Value = serde_json::from_str(&response.body_mut().with_config().limit(1 << 30).read_to_string()?)?;
    if !status.is_success() {
        bail!("GET {path}: {status} {body}");
    }
    Ok(body)
}

fn load_markets(agent: &ureq::Agent, base: &str, token: &str) -> anyhow::Result<(BTreeMap<String, Market>, u32)> {
    let mut markets = BTreeMap::new();
    let mut money_places = 6;
    for market in get(agent, base, token, "/v1/markets")?.as_array().context("a list of markets")? {
        let (tick_text, lot_text) = (text(&market["tick_size"])?, text(&market["lot_size"])?);
        let (price_places, qty_places) = (places_of(tick_text), places_of(lot_text));
        let quote_places = market["quote_decimals"].as_u64().unwrap_or(6) as u32;
        money_places = quote_places;
        let (tick, lot) = (parse(tick_text, price_places)?, parse(lot_text, qty_places)?);
        let exponent = quote_places as i32 - (price_places + qty_places) as i32;
        let multiplier = if exponent >= 0 {
            tick * lot * 10i128.pow(exponent as u32)
        } else {
            tick * lot / 10i128.pow((-exponent) as u32)
        };
        let risk = &market["risk"];
        let maintenance_tiers = match risk["tiers"].as_array() {
            Some(tiers) => tiers
                .iter()
                .map(|tier| {
                    Ok((
                        parse(text(&tier["notional_max"])?, quote_places)?,
                        parse(text(&tier["maintenance_margin"])?, 8)?,
                    ))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => vec![(i128::MAX, parse(text(&risk["maintenance_margin"])?, 8)?)],
        };
        markets.insert(
            text(&market["symbol"])?.to_string(),
            Market {
                maintenance_tiers,
                price_places,
                qty_places,
                tick,
                lot,
                multiplier,
                maker_fee: parse(text(&market["risk"]["maker_fee"])?, 8)?,
                taker_fee: parse(text(&market["risk"]["taker_fee"])?, 8)?,
            },
        );
    }
    Ok((markets, money_places))
}

/// The last (seq, idx) in the event log now.
fn log_end(agent: &ureq::Agent, base: &str, token: &str) -> anyhow::Result<(u64, u64)> {
    let mut seq = get(agent, base, token, "/admin/v1/ledger")?["seq"].as_u64().context("ledger seq")?;
    while seq > 0 {
        let page = get(agent, base, token, &format!("/admin/v1/events?from_seq={seq}&limit=1"))?;
        if let Some(idx) = page["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["seq"] == seq)
            .filter_map(|e| e["idx"].as_u64())
            .max()
        {
            return Ok((seq, idx));
        }
        seq -= 1;
    }
    Ok((0, 0))
}

fn connect(base: &str, token: &str) -> anyhow::Result<WebSocket<MaybeTlsStream<TcpStream>>> {
    let url = base.replacen("http", "ws", 1) + "/ws";
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert("Authorization", format!("Bearer {token}").parse()?);
    let (mut socket, _) = tungstenite::connect(request).context("connecting to /ws")?;
    if let MaybeTlsStream::Plain(stream) = socket.get_mut() {
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    }
    Ok(socket)
}

/// Where the events come from: the host's WebSocket, or the `EXHOST_EVENTS`
/// JetStream stream a cluster publishes them to.
pub enum Source<'a> {
    WebSocket,
    /// NATS server addresses, `nats://host:port`.
    Nats(&'a [String]),
}

/// Events one after another, from offset 0.
trait Events {
    fn next_event(&mut self) -> anyhow::Result<Option<Value>>;
}

struct SocketEvents(tungstenite::WebSocket<MaybeTlsStream<std::net::TcpStream>>);

impl Events for SocketEvents {
    fn next_event(&mut self) -> anyhow::Result<Option<Value>> {
        loop {
            let Message::Text(message) = self.0.read().context("reading the event stream")? else { continue };
            let message: Value = serde_json::from_str(&message)?;
            if message["type"] == "error" {
                bail!("the host said: {}", message["error"]);
            }
            if let Some(event) = message.get("event") {
                return Ok(Some(event.clone()));
            }
        }
    }
}

/// `EXHOST_EVENTS`, read in stream order with an ordered consumer.
struct NatsEvents {
    /// `Some` until dropped, inside the runtime (its subscription spawns a task to end).
    messages: Option<async_nats::jetstream::consumer::pull::Ordered>,
    runtime: tokio::runtime::Runtime,
}

impl Drop for NatsEvents {
    fn drop(&mut self) {
        let _inside = self.runtime.enter();
        self.messages.take();
    }
}

impl NatsEvents {
    fn connect(urls: &[String]) -> anyhow::Result<NatsEvents> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let messages = runtime.block_on(async {
            let addresses: Vec<async_nats::ServerAddr> =
                urls.iter().map(|url| url.parse()).collect::<Result<_, _>>().context("a NATS address")?;
            let client = async_nats::connect(addresses).await.context("connecting to NATS")?;
            let js = async_nats::jetstream::new(client);
            let stream = js.get_stream("EXHOST_EVENTS").await.context("the stream EXHOST_EVENTS")?;
            let consumer = stream
                .create_consumer(OrderedConfig { deliver_policy: DeliverPolicy::All, ..Default::default() })
                .await
                .context("a consumer of EXHOST_EVENTS")?;
            anyhow::Ok(consumer.messages().await.context("reading EXHOST_EVENTS")?)
        })?;
        Ok(NatsEvents { messages: Some(messages), runtime })
    }
}

impl Events for NatsEvents {
    fn next_event(&mut self) -> anyhow::Result<Option<Value>> {
        use futures_util::StreamExt;
        let Some(messages) = self.messages.as_mut() else { return Ok(None) };
        let next = self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), messages.next()).await.context("EXHOST_EVENTS went quiet")
        })?;
        let Some(message) = next else { return Ok(None) };
        let message = message.map_err(|error| anyhow::anyhow!("reading EXHOST_EVENTS: {error}"))?;
        Ok(Some(serde_json::from_slice(&message.payload)?))
    }
}

/// Follow the event stream from offset 0 up to the log's end now, rebuild,
/// and compare with the host.
pub fn run(base: &str, token: &str) -> anyhow::Result<Report> {
    run_from(base, token, Source::WebSocket)
}

/// [`run`], reading the events from `source`.
pub fn run_from(base: &str, token: &str, source: Source<'_>) -> anyhow::Result<Report> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let (markets, money_places) = load_markets(&agent, base, token)?;
    let end = log_end(&agent, base, token)?;
    let mut books = Books {
        markets,
        money_places,
        positions: BTreeMap::new(),
        balances: BTreeMap::new(),
        marks: BTreeMap::new(),
        funding_index: BTreeMap::new(),
    };
    let mut report = Report { through_seq: end.0, ..Report::default() };

    let mut events: Box<dyn Events> = match source {
        Source::WebSocket => {
            let mut socket = connect(base, token)?;
            socket.send(Message::Text(
                json!({"op": "subscribe", "channel": "events", "from_seq": 1}).to_string().into(),
            ))?;
            Box::new(SocketEvents(socket))
        }
        Source::Nats(urls) => Box::new(NatsEvents::connect(urls)?),
    };
    let mut command: Vec<Value> = Vec::new();
    let mut last = (0u64, 0u64);
    while end.0 > 0 && last < end {
        let Some(event) = events.next_event()? else { bail!("the event stream ended at {last:?}, before {end:?}") };
        let event = &event;
        let at = (event["seq"].as_u64().context("seq")?, event["idx"].as_u64().context("idx")?);
        if at <= last && report.events > 0 {
            report.mismatches.push(format!("event {at:?} arrived after {last:?}: duplicate or out of order"));
        }
        if command.first().is_some_and(|first| first["seq"].as_u64() != Some(at.0)) {
            books.check_command(&command, &mut report)?;
            command.clear();
        }
        books.apply(event).with_context(|| format!("applying {event}"))?;
        command.push(event.clone());
        last = at;
        report.events += 1;
    }
    books.check_command(&command, &mut report)?;

    // The host's own answers, as of the same sequence.
    let users: Vec<u64> = books.balances.keys().copied().collect();
    report.users = users.len();
    for user in users {
        let account = get(&agent, base, token, &format!("/admin/v1/accounts/{user}?at_seq={}", end.0))?;
        let balance = parse(text(&account["balances"]["USD"]["total"])?, money_places)?;
        let mine = books.balances[&user];
        let mut line = format!("user {user}: balance {balance}");
        if balance != mine {
            report.mismatches.push(format!("user {user}: host balance {balance}, rebuilt {mine}"));
        }
        let maintenance: i128 = books
            .positions
            .iter()
            .filter(|((owner, _), position)| *owner == user && position.size != 0)
            .map(|((_, symbol), position)| {
                let market = &books.markets[symbol];
                let mark = books.marks.get(symbol).copied().unwrap_or(0);
                market.maintenance(position.size.abs() * mark * market.multiplier)
            })
            .sum();
        if let Some(host_maintenance) = account["maintenance_margin"].as_str() {
            let host_maintenance = parse(host_maintenance, money_places)?;
            line.push_str(&format!(", maintenance {host_maintenance}"));
            if host_maintenance != maintenance {
                report
                    .mismatches
                    .push(format!("user {user}: host maintenance margin {host_maintenance}, rebuilt {maintenance}"));
            }
        }
        for position in account["positions"].as_array().into_iter().flatten() {
            let symbol = text(&position["symbol"])?.to_string();
            let market = &books.markets[&symbol];
            let size = parse(text(&position["size"])?, market.qty_places)? / market.lot;
            let rebuilt = books.positions.get(&(user, symbol.clone())).copied().unwrap_or_default();
            line.push_str(&format!(", {symbol} size {size}"));
            if size != rebuilt.size {
                report.mismatches.push(format!("user {user} {symbol}: host size {size}, rebuilt {}", rebuilt.size));
            }
            let realized = parse(text(&position["realized_pnl"])?, money_places)?;
            if realized != rebuilt.realized {
                report
                    .mismatches
                    .push(format!("user {user} {symbol}: host realized {realized}, rebuilt {}", rebuilt.realized));
            }
        }
        report.lines.push(line);
    }
    Ok(report)
}
