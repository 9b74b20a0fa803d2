//! The WebSocket API (`/ws`): public `trades` and `book` channels, the
//! authenticated `user` channel, and the operator's `events` channel that
//! follows the whole event log from any sequence number, then live.
//!
//! No gap, no duplicate: a connection subscribes to the live stream before it
//! reads anything stored, the node publishes a batch only after it is durable,
//! applied and stored, and the connection drops live events at or below the
//! last sequence it already sent. A book subscription starts with a snapshot
//! taken after every command applied so far and its `seq`; every later diff
//! carries the `seq` that caused it.
//!
//! A subscriber that falls more than `LIVE_BATCHES_BUFFERED` batches behind is
//! told `lagged` with the sequence to resume from, and the socket is closed.
//! A connection follows the live stream only once it subscribes to something,
//! so a socket used only for order entry is never told `lagged`.
//!
//! Order entry (`order`, `cancel`, `amend`, after `auth`) takes the same
//! fields and checks as the HTTP endpoints and answers with the same order
//! shape, tagged with the request's `id`. Requests are pipelined: a client need
//! not wait for an answer before sending the next request; commands are
//! journaled in the order they arrive and accepted ones are answered in that
//! order, each only after its journal write is durable. At most
//! `ORDERS_IN_FLIGHT_MAX` may await their answer; beyond that the connection
//! stops reading until answers go out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use exhost_engine::{Event, EventBody, MarketId};
use exhost_guest_sdk::{Level, MatchingEvent, PositionEvent, Side, UserId};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::error::ApiError;
use crate::state::AppState;
use crate::trading::{AmendRequest, Answer, OrderEntry, PlaceRequest, amend_entry, cancel_entry, place_entry};
use crate::views::{event_json, trade_json, user_event_json};
use exhost_node::Pending;
use exhost_node::readmodel::{self, TradeView};

/// A book's changed levels: `(side, price_ticks)` to the new `qty_lots` (0: gone).
type LevelChanges = BTreeMap<(Side, u64), u64>;

/// Largest message a client may send.
const CLIENT_MESSAGE_BYTES_MAX: usize = 16 * 1024;
/// Stored events sent per read while catching up.
const CATCH_UP_PAGE_EVENTS: usize = 2_000;
/// Order-entry commands of one connection awaiting their answer.
const ORDERS_IN_FLIGHT_MAX: usize = 1_024;

/// The WebSocket: trades, book (snapshot, then diffs with seq), the user's
/// changes, the event log from any offset, and order entry (see API.md).
#[utoipa::path(get, path = "/ws", tag = crate::openapi::HOST, responses(
    (status = 101, description = "Switching to the WebSocket protocol"),
    (status = 400, description = "Not a WebSocket upgrade request (`bad_request`)", body = crate::error::ErrorBody),
    (status = 426, description = "The connection cannot be upgraded (`upgrade_required`)", body = crate::error::ErrorBody),
))]
pub(super) async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    // axum's refusal is plain text; the API's errors are JSON.
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let code =
                if rejection.status() == StatusCode::UPGRADE_REQUIRED { "upgrade_required" } else { "bad_request" };
            return ApiError::new(rejection.status(), code, rejection.body_text()).into_response();
        }
    };
    // Operators may authenticate with the same bearer header as the HTTP API.
    let operator = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| bool::from(token.as_bytes().ct_eq(state.admin_token.as_bytes())));
    upgrade
        .max_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| Connection::new(state, socket, operator).run())
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum ClientMessage {
    Subscribe { channel: String, symbol: Option<String>, from_seq: Option<u64> },
    Auth { api_key: String, timestamp: String, signature: String, nonce: Option<String> },
    AuthOperator { token: String },
    Ping,
}

/// An order-entry command on its way through the journal and the engine.
struct InFlight {
    id: Value,
    pending: Pending,
    answer: Answer,
}

struct Connection {
    state: AppState,
    socket: WebSocket,
    /// The live stream, from the first subscription on.
    live: Option<broadcast::Receiver<Arc<Vec<Event>>>>,
    operator: bool,
    user: Option<UserId>,
    api_key: Option<String>,
    /// This socket's challenge: an `auth` must sign it, so it opens no other socket.
    nonce: String,
    trades: BTreeSet<MarketId>,
    /// Book subscriptions, with the sequence of their snapshot.
    books: Vec<(MarketId, u64)>,
    user_channel: bool,
    /// The operator's event stream: the last sequence already sent.
    events_through: Option<u64>,
}

enum Flow {
    Continue,
    Close,
}

impl Connection {
    fn new(state: AppState, socket: WebSocket, operator: bool) -> Connection {
        Connection {
            state,
            socket,
            live: None,
            operator,
            user: None,
            api_key: None,
            nonce: challenge_nonce(),
            trades: BTreeSet::new(),
            books: Vec::new(),
            user_channel: false,
            events_through: None,
        }
    }

    async fn send(&mut self, value: Value) -> Flow {
        match self.socket.send(Message::Text(value.to_string().into())).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close,
        }
    }

    async fn error(&mut self, code: &str, message: impl Into<String>) -> Flow {
        self.send(json!({ "type": "error", "error": { "code": code, "message": message.into() } })).await
    }

    async fn run(mut self) {
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let nonce = self.nonce.clone();
        if let Flow::Close = self.send(json!({ "type": "challenge", "nonce": nonce })).await {
            return;
        }
        loop {
            let flow = tokio::select! {
                incoming = self.socket.recv(), if in_flight.len() < ORDERS_IN_FLIGHT_MAX => match incoming {
                    Some(Ok(Message::Text(text))) => self.on_message(text.as_str(), &mut in_flight).await,
                    Some(Ok(Message::Binary(_))) => self.error("bad_request", "messages are JSON text").await,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Flow::Continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Flow::Close,
                },
                answered = next_answer(&mut in_flight) => match in_flight.pop_front() {
                    Some(entry) => self.on_answer(entry.id, entry.answer, answered).await,
                    None => Flow::Continue,
                },
                batch = next_live(&mut self.live) => match batch {
                    Ok(events) => self.on_live(&events).await,
                    Err(RecvError::Lagged(_)) => {
                        let resume = self.events_through.map_or(0, |seq| seq + 1);
                        let _ = self.error("lagged", format!("this connection fell behind; resubscribe from_seq {resume}")).await;
                        Flow::Close
                    }
                    Err(RecvError::Closed) => Flow::Close,
                },
            };
            if matches!(flow, Flow::Close) {
                let _ = self.socket.send(Message::Close(None)).await;
                return;
            }
        }
    }

    async fn on_answer(
        &mut self,
        id: Value,
        answer: Answer,
        applied: Result<exhost_node::Applied, exhost_node::SubmitError>,
    ) -> Flow {
        if let (Ok(applied), Some(api_key)) = (&applied, &self.api_key) {
            crate::trading::charge_faults(&self.state, api_key, applied);
        }
        match applied.map_err(ApiError::from).and_then(|applied| answer.order(&applied)) {
            Ok(order) => self.send(json!({ "type": "order", "id": id, "order": order })).await,
            Err(error) => self.entry_error(id, error).await,
        }
    }

    /// An order-entry request that failed, with the same code HTTP would give.
    async fn entry_error(&mut self, id: Value, error: ApiError) -> Flow {
        if error.status.is_server_error() {
            tracing::error!(code = error.code, message = %error.message, "websocket order entry failed");
        }
        self.send(json!({ "type": "error", "id": id, "error": { "code": error.code, "message": error.message } })).await
    }

    /// `order`, `cancel` or `amend`: check it as HTTP would, then enqueue it.
    async fn order_entry(
        &mut self,
        op: &str,
        id: Value,
        mut fields: serde_json::Map<String, Value>,
        in_flight: &mut VecDeque<InFlight>,
    ) -> Flow {
        let (Some(user_id), Some(api_key)) = (self.user, self.api_key.clone()) else {
            return self.entry_error(id, ApiError::unauthorized("send {\"op\":\"auth\", ...} first")).await;
        };
        if !self.state.gate.limits.allow(&api_key) {
            return self
                .entry_error(id, ApiError::rate_limited("too many requests from this API key; slow down"))
                .await;
        }
        let invalid = |error: serde_json::Error| ApiError::bad_request(format!("invalid {op} message: {error}"));
        let entry: Result<OrderEntry, ApiError> = match op {
            "order" => serde_json::from_value::<PlaceRequest>(Value::Object(fields))
                .map_err(invalid)
                .and_then(|request| place_entry(&self.state, user_id, request)),
            _ => {
                let order_id = match fields.remove("order_id") {
                    Some(Value::String(text)) => text,
                    Some(Value::Number(number)) => number.to_string(),
                    _ => return self.entry_error(id, ApiError::bad_request(format!("{op} needs an order_id"))).await,
                };
                if op == "cancel" {
                    match fields.keys().next() {
                        Some(extra) => {
                            Err(ApiError::bad_request(format!("invalid cancel message: unknown field `{extra}`")))
                        }
                        None => cancel_entry(&self.state, user_id, &order_id),
                    }
                } else {
                    serde_json::from_value::<AmendRequest>(Value::Object(fields))
                        .map_err(invalid)
                        .and_then(|request| amend_entry(&self.state, user_id, &order_id, request))
                }
            }
        };
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => return self.entry_error(id, error).await,
        };
        match self.state.node.enqueue(entry.command) {
            Ok(pending) => {
                in_flight.push_back(InFlight { id, pending, answer: entry.answer });
                Flow::Continue
            }
            Err(error) => self.entry_error(id, ApiError::from(error)).await,
        }
    }

    async fn on_message(&mut self, text: &str, in_flight: &mut VecDeque<InFlight>) -> Flow {
        let mut fields: serde_json::Map<String, Value> = match serde_json::from_str(text) {
            Ok(fields) => fields,
            Err(error) => return self.error("bad_request", format!("invalid message: {error}")).await,
        };
        if let Some(op @ ("order" | "cancel" | "amend")) = fields.get("op").and_then(Value::as_str) {
            let op = op.to_owned();
            fields.remove("op");
            let id = fields.remove("id").unwrap_or(Value::Null);
            return self.order_entry(&op, id, fields, in_flight).await;
        }
        let message: ClientMessage = match serde_json::from_value(Value::Object(fields)) {
            Ok(message) => message,
            Err(error) => return self.error("bad_request", format!("invalid message: {error}")).await,
        };
        match message {
            ClientMessage::Ping => self.send(json!({ "type": "pong" })).await,
            ClientMessage::AuthOperator { token } => {
                if bool::from(token.as_bytes().ct_eq(self.state.admin_token.as_bytes())) {
                    self.operator = true;
                    self.send(json!({ "type": "authenticated", "role": "operator" })).await
                } else {
                    self.error("forbidden", "the operator token is not valid").await
                }
            }
            ClientMessage::Auth { api_key, timestamp, signature, nonce } => {
                // The story (finding 5): an `auth` message signed only its timestamp,
                // so one captured on the wire opened any other socket, which could
                // then trade indefinitely. It must sign this socket's own challenge.
                let Some(nonce) = nonce else {
                    return self
                        .error(
                            "unauthorized",
                            "sign this socket's challenge: timestamp \\n GET \\n /ws \\n nonce, and send the nonce",
                        )
                        .await;
                };
                if !bool::from(nonce.as_bytes().ct_eq(self.nonce.as_bytes())) {
                    return self.error("unauthorized", "that is not this socket's challenge nonce").await;
                }
                let message = crate::auth::ws_message(&timestamp, &nonce);
                match self.state.authenticate(&api_key, &timestamp, &signature, &message) {
                    Ok(proven) => {
                        self.user = Some(proven.user_id);
                        self.api_key = Some(api_key);
                        self.send(json!({ "type": "authenticated", "role": "user", "user_id": proven.user_id.0 })).await
                    }
                    Err(error) => self.error(error.code, error.message).await,
                }
            }
            ClientMessage::Subscribe { channel, symbol, from_seq } => self.subscribe(&channel, symbol, from_seq).await,
        }
    }

    fn market(&self, symbol: Option<&str>) -> Option<MarketId> {
        let directory = self.state.node.directory.read().unwrap_or_else(|p| p.into_inner());
        symbol.and_then(|symbol| directory.symbols.get(symbol).copied())
    }

    async fn subscribe(&mut self, channel: &str, symbol: Option<String>, from_seq: Option<u64>) -> Flow {
        // Follow the live stream before reading anything stored: no gap.
        if self.live.is_none() {
            self.live = Some(self.state.node.live.subscribe());
        }
        match channel {
            "trades" | "book" => {
                let Some(market) = self.market(symbol.as_deref()) else {
                    return self.error("unknown_market", format!("no market {symbol:?}")).await;
                };
                if channel == "trades" {
                    self.trades.insert(market);
                    return self.send(json!({ "type": "subscribed", "channel": "trades", "symbol": symbol })).await;
                }
                let (seq, (bids, asks)) = {
                    let books = self.state.node.books.read().unwrap_or_else(|p| p.into_inner());
                    (books.seq, books.market(market).map(|book| book.top(usize::MAX)).unwrap_or_default())
                };
                self.books.push((market, seq));
                let snapshot = self.levels_json(market, &bids, &asks);
                self.send(json!({
                    "channel": "book", "type": "snapshot", "symbol": symbol, "seq": seq,
                    "bids": snapshot.0, "asks": snapshot.1,
                }))
                .await
            }
            "user" => match self.user {
                None => self.error("unauthorized", "send {\"op\":\"auth\", ...} first").await,
                Some(_) => {
                    self.user_channel = true;
                    self.send(json!({ "type": "subscribed", "channel": "user" })).await
                }
            },
            "events" => {
                if !self.operator {
                    return self.error("forbidden", "the events channel is for operators").await;
                }
                self.catch_up(from_seq.unwrap_or(1)).await
            }
            other => self.error("bad_request", format!("no channel {other:?}")).await,
        }
    }

    /// Send the stored event log from `from_seq` to its end, then live follows.
    async fn catch_up(&mut self, from_seq: u64) -> Flow {
        self.events_through = Some(from_seq.saturating_sub(1));
        if let Flow::Close = self.send(json!({ "type": "subscribed", "channel": "events", "from_seq": from_seq })).await
        {
            return Flow::Close;
        }
        let mut next = from_seq;
        loop {
            let store = self.state.store.clone();
            let page =
                tokio::task::spawn_blocking(move || readmodel::events_from(&store, next, CATCH_UP_PAGE_EVENTS)).await;
            let (events, next_seq) = match page {
                Ok(Ok(page)) => page,
                Ok(Err(error)) => return self.error("internal", error.to_string()).await,
                Err(error) => return self.error("internal", error.to_string()).await,
            };
            if events.is_empty() {
                return Flow::Continue;
            }
            for event in &events {
                if let Flow::Close = self.send_event(event).await {
                    return Flow::Close;
                }
            }
            next = next_seq;
        }
    }

    async fn send_event(&mut self, event: &Event) -> Flow {
        let value = {
            let directory = self.state.node.directory.read().unwrap_or_else(|p| p.into_inner());
            event_json(event, &directory)
        };
        self.events_through = Some(event.seq);
        self.send(json!({ "channel": "events", "event": value })).await
    }

    fn levels_json(&self, market: MarketId, bids: &[Level], asks: &[Level]) -> (Value, Value) {
        let directory = self.state.node.directory.read().unwrap_or_else(|p| p.into_inner());
        let Some(spec) = directory.markets.get(market.0 as usize) else { return (json!([]), json!([])) };
        let render = |levels: &[Level]| -> Value {
            levels
                .iter()
                .map(|l| json!([spec.price_scale.format_steps(l.price_ticks), spec.qty_scale.format_steps(l.qty_lots)]))
                .collect()
        };
        (render(bids), render(asks))
    }

    async fn on_live(&mut self, events: &Arc<Vec<Event>>) -> Flow {
        let mut out: Vec<Value> = Vec::new();
        // Book diffs: one message per (market, seq), levels in the module's order.
        let mut diffs: Vec<(MarketId, u64, LevelChanges)> = Vec::new();
        {
            let directory = self.state.node.directory.read().unwrap_or_else(|p| p.into_inner());
            for event in events.iter() {
                if let Some(through) = self.events_through
                    && event.seq > through
                {
                    out.push(json!({ "channel": "events", "event": event_json(event, &directory) }));
                }
                match &event.body {
                    EventBody::Matching { market, event: MatchingEvent::Trade(trade) }
                        if self.trades.contains(market) =>
                    {
                        if let Some(spec) = directory.markets.get(market.0 as usize) {
                            let view = TradeView::of(event, trade);
                            let mut value = trade_json(&view, spec);
                            value["symbol"] = json!(spec.symbol);
                            out.push(json!({ "channel": "trades", "data": value }));
                        }
                    }
                    EventBody::Matching { market, event: MatchingEvent::Level { side, price_ticks, qty_lots } }
                        if self.books.iter().any(|(m, since)| m == market && event.seq > *since) =>
                    {
                        // One diff per command and market, even when the command
                        // touched the market twice (a liquidation across markets):
                        // a level changed twice shows its final quantity once.
                        let index = match diffs.iter().position(|(m, seq, _)| m == market && *seq == event.seq) {
                            Some(index) => index,
                            None => {
                                diffs.push((*market, event.seq, BTreeMap::new()));
                                diffs.len() - 1
                            }
                        };
                        diffs[index].2.insert((*side, *price_ticks), *qty_lots);
                    }
                    _ => {}
                }
                if self.user_channel
                    && let Some(user_id) = self.user
                    && concerns(&event.body, user_id)
                {
                    out.push(json!({ "channel": "user", "event": user_event_json(event, &directory, user_id) }));
                }
            }
        }
        if let Some(last) = events.last()
            && self.events_through.is_some_and(|through| last.seq > through)
        {
            self.events_through = Some(last.seq);
        }
        for (market, seq, levels) in diffs {
            let side = |wanted: Side| -> Vec<Level> {
                let levels = levels.iter().filter(|((side, _), _)| *side == wanted);
                let levels = levels.map(|(&(_, price_ticks), &qty_lots)| Level { price_ticks, qty_lots });
                // Best first, as in a snapshot.
                if wanted == Side::Buy { levels.rev().collect() } else { levels.collect() }
            };
            let (bids, asks) = self.levels_json(market, &side(Side::Buy), &side(Side::Sell));
            let symbol = self.state.node.directory.read().unwrap_or_else(|p| p.into_inner()).markets[market.0 as usize]
                .symbol
                .clone();
            out.push(
                json!({ "channel": "book", "type": "diff", "symbol": symbol, "seq": seq, "bids": bids, "asks": asks }),
            );
        }
        for value in out {
            if let Flow::Close = self.send(value).await {
                return Flow::Close;
            }
        }
        Flow::Continue
    }
}

/// A fresh random challenge for one socket (128 bits, hex).
fn challenge_nonce() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Without randomness no socket can be authenticated: a nonce nobody can know.
        return "unavailable".repeat(4);
    }
    hex::encode(bytes)
}

/// The answer to the oldest order-entry command in flight; never, if there is none.
async fn next_answer(in_flight: &mut VecDeque<InFlight>) -> Result<exhost_node::Applied, exhost_node::SubmitError> {
    match in_flight.front_mut() {
        Some(entry) => (&mut entry.pending).await,
        None => std::future::pending().await,
    }
}

/// The next live batch; never, before the connection subscribes to anything.
async fn next_live(live: &mut Option<broadcast::Receiver<Arc<Vec<Event>>>>) -> Result<Arc<Vec<Event>>, RecvError> {
    match live {
        Some(live) => live.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether an event belongs on a user's own channel.
fn concerns(body: &EventBody, user_id: UserId) -> bool {
    match body {
        EventBody::OrderReceived { user_id: owner, .. }
        | EventBody::OrderOptions { user_id: owner, .. }
        | EventBody::OrderTrigger { user_id: owner, .. } => *owner == user_id,
        EventBody::Matching { event, .. } => match event {
            MatchingEvent::Order(update) => update.user_id == user_id,
            MatchingEvent::Trade(trade) => trade.maker_user_id == user_id || trade.taker_user_id == user_id,
            MatchingEvent::Rejected { user_id: owner, .. } => *owner == user_id,
            MatchingEvent::Level { .. } | MatchingEvent::Wake { .. } => false,
        },
        EventBody::Position(event) => match event {
            PositionEvent::Balance { user_id: owner, .. }
            | PositionEvent::Position { user_id: owner, .. }
            | PositionEvent::LiquidationStarted { user_id: owner, .. }
            | PositionEvent::LiquidationOrder { user_id: owner, .. }
            | PositionEvent::Fee { user_id: owner, .. }
            | PositionEvent::Exposure { user_id: owner, .. }
            | PositionEvent::FundingSettled { user_id: owner, .. }
            | PositionEvent::Rejected { user_id: owner, .. } => *owner == user_id,
            PositionEvent::Account(state) => state.user_id == user_id,
            PositionEvent::AutoDeleverage { liquidated_user_id, counterparty_user_id, .. } => {
                *liquidated_user_id == user_id || *counterparty_user_id == user_id
            }
            _ => false,
        },
        EventBody::Deposited { user_id: owner, .. }
        | EventBody::MarketCommandRejected { user_id: owner, .. }
        | EventBody::MassCancelled { user_id: owner, .. } => *owner == user_id,
        _ => false,
    }
}
