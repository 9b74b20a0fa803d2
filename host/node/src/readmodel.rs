//! The read model (the query side): built only from events, never by reading
//! module state, and stored beside the journal.
//!
//! Keys in the `read` family, each starting with a one-byte namespace:
//! - `o` order id → [`OrderView`], the order's latest state and its fills;
//! - `u` user id, order id → market id, present while the order is open;
//! - `t` market id, seq, idx → [`TradeView`], so "newest trades" is a reverse scan;
//! - `a` user id, seq → the user's `AccountState` after that command, so "the
//!   account as of sequence N" is one reverse seek;
//! - `h` user id, seq, idx → market id + 1 (0: none): the user's change messages
//!   (balances, positions, fills, liquidations), for the account history;
//! - `L` seq → the exchange's `LedgerState` after that command;
//! - `c` user id, client order id → the id of the user's latest order that
//!   carried it, so a client that timed out can learn whether its order exists.
//!
//! Events themselves go to the `events` family. The writer also records the
//! last sequence it covered (`meta/read_model_seq`), so recovery rewrites
//! exactly the events a crash lost: these writes are not synced, because the
//! journal can always regenerate them.

use std::collections::BTreeMap;

use exhost_engine::{Event, EventBody, MarketId};
use exhost_guest_sdk::codec::{decode, decode_prefix, encode, encode_into};
use exhost_guest_sdk::{
    AccountState, LedgerState, MatchingEvent, OrderId, OrderOptions, OrderStatus, OrderType, PositionEvent, Reason,
    SelfTradePrevention, Side, TimeInForce, Trade, TradeId, Trigger, UserId,
};
use exhost_store::{Batch, Durability, Family, Store, StoreError, event_key};
use serde::{Deserialize, Serialize};

pub const READ_MODEL_SEQ: &str = "read_model_seq";

/// Who provided liquidity in a fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Liquidity {
    Maker,
    Taker,
}

impl Liquidity {
    pub fn as_str(self) -> &'static str {
        match self {
            Liquidity::Maker => "maker",
            Liquidity::Taker => "taker",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FillView {
    pub seq: u64,
    pub trade_id: TradeId,
    pub price_ticks: u64,
    pub qty_lots: u64,
    pub liquidity: Liquidity,
    /// Settlement-asset units the order's user paid for this fill.
    pub fee_units: i128,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub order_id: OrderId,
    pub market: MarketId,
    pub user_id: UserId,
    pub client_order_id: Option<String>,
    pub side: Side,
    pub order_type: OrderType,
    pub time_in_force: TimeInForce,
    pub self_trade_prevention: SelfTradePrevention,
    pub reduce_only: bool,
    pub price_ticks: u64,
    pub qty_lots: u64,
    pub filled_lots: u64,
    pub status: OrderStatus,
    pub reason: Option<Reason>,
    pub created_seq: u64,
    pub updated_seq: u64,
    pub fills: Vec<FillView>,
    /// Iceberg and expiry. Stored after the rest, and only when the order
    /// has some (or a trigger), so views written before options existed
    /// read unchanged.
    #[serde(skip)]
    pub options: OrderOptions,
    /// A conditional order's trigger, stored after the options.
    #[serde(skip)]
    pub trigger: Option<Trigger>,
}

impl OrderView {
    fn encode(&self) -> Vec<u8> {
        let mut out = encode(self);
        if !self.options.is_plain() || self.trigger.is_some() {
            encode_into(&self.options, &mut out);
        }
        if let Some(trigger) = &self.trigger {
            encode_into(trigger, &mut out);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<OrderView, exhost_guest_sdk::codec::DecodeError> {
        let (mut view, rest): (OrderView, _) = decode_prefix(bytes)?;
        if !rest.is_empty() {
            let (options, rest) = decode_prefix(rest)?;
            view.options = options;
            if !rest.is_empty() {
                view.trigger = Some(decode(rest)?);
            }
        }
        Ok(view)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeView {
    pub seq: u64,
    pub idx: u32,
    pub ts_ns: u64,
    pub trade_id: TradeId,
    pub price_ticks: u64,
    pub qty_lots: u64,
    pub taker_side: Side,
}

impl TradeView {
    /// The public view of `trade`, which `event` carried.
    pub fn of(event: &Event, trade: &Trade) -> TradeView {
        TradeView {
            seq: event.seq,
            idx: event.idx,
            ts_ns: event.ts_ns,
            trade_id: trade.trade_id,
            price_ticks: trade.price_ticks,
            qty_lots: trade.qty_lots,
            taker_side: trade.taker_side,
        }
    }
}

fn order_key(order_id: OrderId) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(b'o');
    key.extend_from_slice(&order_id.0.to_be_bytes());
    key
}

fn open_key(user_id: UserId, order_id: OrderId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(b'u');
    key.extend_from_slice(&user_id.0.to_be_bytes());
    key.extend_from_slice(&order_id.0.to_be_bytes());
    key
}

fn trade_key(market: MarketId, seq: u64, idx: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(b't');
    key.extend_from_slice(&market.0.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(&idx.to_be_bytes());
    key
}

fn user_key(namespace: u8, user_id: UserId, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(21);
    key.push(namespace);
    key.extend_from_slice(&user_id.0.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn history_key(user_id: UserId, seq: u64, idx: u32) -> Vec<u8> {
    let mut key = user_key(b'h', user_id, seq);
    key.extend_from_slice(&idx.to_be_bytes());
    key
}

fn client_order_key(user_id: UserId, client_order_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + client_order_id.len());
    key.push(b'c');
    key.extend_from_slice(&user_id.0.to_be_bytes());
    key.extend_from_slice(client_order_id.as_bytes());
    key
}

fn ledger_key(seq: u64) -> Vec<u8> {
    let mut key = vec![b'L'];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The users an event concerns, and its market, for the history index.
fn history_of(body: &EventBody) -> (Vec<UserId>, Option<MarketId>) {
    match body {
        EventBody::Matching { market, event: MatchingEvent::Trade(trade) } => {
            (vec![trade.maker_user_id, trade.taker_user_id], Some(*market))
        }
        EventBody::Position(event) => match event {
            PositionEvent::Balance { user_id, .. } => (vec![*user_id], None),
            PositionEvent::Position { user_id, market, .. } => (vec![*user_id], Some(*market)),
            PositionEvent::LiquidationStarted { user_id, .. } => (vec![*user_id], None),
            PositionEvent::Fee { user_id, market, .. } => (vec![*user_id], Some(*market)),
            PositionEvent::LiquidationOrder { user_id, market, .. } => (vec![*user_id], Some(*market)),
            PositionEvent::AutoDeleverage { market, liquidated_user_id, counterparty_user_id, .. } => {
                (vec![*liquidated_user_id, *counterparty_user_id], Some(*market))
            }
            _ => (Vec::new(), None),
        },
        _ => (Vec::new(), None),
    }
}

fn malformed(key: &[u8], error: impl std::fmt::Display) -> StoreError {
    StoreError::Malformed { family: Family::Read.name(), key: format!("{key:?}"), reason: error.to_string() }
}

/// The view an `OrderReceived` event starts.
pub fn received_view(event: &Event) -> Option<OrderView> {
    let EventBody::OrderReceived {
        market,
        order_id,
        user_id,
        client_order_id,
        side,
        order_type,
        price_ticks,
        qty_lots,
        time_in_force,
        self_trade_prevention,
        reduce_only,
    } = &event.body
    else {
        return None;
    };
    Some(OrderView {
        order_id: *order_id,
        market: *market,
        user_id: *user_id,
        client_order_id: client_order_id.clone(),
        side: *side,
        order_type: *order_type,
        time_in_force: *time_in_force,
        self_trade_prevention: *self_trade_prevention,
        reduce_only: *reduce_only,
        price_ticks: *price_ticks,
        qty_lots: *qty_lots,
        filled_lots: 0,
        status: OrderStatus::New,
        reason: None,
        created_seq: event.seq,
        updated_seq: event.seq,
        fills: Vec::new(),
        options: OrderOptions::default(),
        trigger: None,
    })
}

/// Apply what one event says about one order to its view.
pub fn apply_to_order(view: &mut OrderView, event: &Event) {
    match &event.body {
        EventBody::OrderOptions { order_id, display_lots, expire_time_ns, .. } if *order_id == view.order_id => {
            view.options = OrderOptions { display_lots: *display_lots, expire_time_ns: *expire_time_ns };
        }
        EventBody::OrderTrigger { order_id, trigger, .. } if *order_id == view.order_id => {
            view.trigger = Some(*trigger);
        }
        EventBody::Matching { event: MatchingEvent::Order(update), .. } if update.order_id == view.order_id => {
            view.price_ticks = update.price_ticks;
            view.qty_lots = update.qty_lots;
            view.filled_lots = update.filled_lots;
            view.status = update.status;
            view.reason = update.reason;
            view.updated_seq = event.seq;
        }
        EventBody::Matching { event: MatchingEvent::Trade(trade), .. } => {
            let liquidity = if trade.maker_order_id == view.order_id {
                Liquidity::Maker
            } else if trade.taker_order_id == view.order_id {
                Liquidity::Taker
            } else {
                return;
            };
            view.fills.push(FillView {
                seq: event.seq,
                trade_id: trade.trade_id,
                price_ticks: trade.price_ticks,
                qty_lots: trade.qty_lots,
                liquidity,
                fee_units: 0,
            });
        }
        EventBody::Position(PositionEvent::Fee { user_id, trade_id, fee_units, .. }) if *user_id == view.user_id => {
            if let Some(fill) = view.fills.iter_mut().rev().find(|fill| fill.trade_id == *trade_id) {
                fill.fee_units = *fee_units;
            }
        }
        _ => {}
    }
}

/// Accumulates the read-model writes of a run of events, then commits them at once.
pub struct ReadModelWriter<'a> {
    store: &'a Store,
    batch: Batch,
    /// Orders touched in this run, newest state; written at commit.
    orders: BTreeMap<OrderId, OrderView>,
    /// The two orders of each trade of this run, to attach fees to fills.
    trade_orders: BTreeMap<TradeId, [OrderId; 2]>,
    last_seq: Option<u64>,
}

impl<'a> ReadModelWriter<'a> {
    pub fn new(store: &'a Store) -> Self {
        ReadModelWriter {
            store,
            batch: Batch::default(),
            orders: BTreeMap::new(),
            trade_orders: BTreeMap::new(),
            last_seq: None,
        }
    }

    /// Number of events and orders waiting to be written.
    pub fn pending(&self) -> usize {
        self.batch.len() + self.orders.len()
    }

    fn order_mut(&mut self, order_id: OrderId) -> Result<Option<&mut OrderView>, StoreError> {
        if !self.orders.contains_key(&order_id) {
            match order(self.store, order_id)? {
                Some(view) => {
                    self.orders.insert(order_id, view);
                }
                None => return Ok(None),
            }
        }
        Ok(self.orders.get_mut(&order_id))
    }

    /// Record one event.
    pub fn apply(&mut self, event: &Event) -> Result<(), StoreError> {
        self.batch.put(Family::Events, event_key(event.seq, event.idx).to_vec(), encode(event));
        self.last_seq = Some(event.seq);
        if let Some(view) = received_view(event) {
            if let Some(client_order_id) = &view.client_order_id {
                let key = client_order_key(view.user_id, client_order_id);
                self.batch.put(Family::Read, key, view.order_id.0.to_be_bytes().to_vec());
            }
            self.orders.insert(view.order_id, view);
            return Ok(());
        }
        let (users, market) = history_of(&event.body);
        for user_id in users {
            let value = market.map_or(0u32, |m| m.0 + 1).to_be_bytes().to_vec();
            self.batch.put(Family::Read, history_key(user_id, event.seq, event.idx), value);
        }
        match &event.body {
            EventBody::Position(PositionEvent::Account(state)) => {
                self.batch.put(Family::Read, user_key(b'a', state.user_id, event.seq), encode(state));
            }
            EventBody::Position(PositionEvent::Ledger(ledger)) => {
                self.batch.put(Family::Read, ledger_key(event.seq), encode(ledger));
            }
            EventBody::Position(PositionEvent::Fee { trade_id, .. }) => {
                // A fee belongs to a fill of one of the trade's two orders (of this command).
                for order_id in self.trade_orders.get(trade_id).copied().unwrap_or_default() {
                    if let Some(view) = self.order_mut(order_id)? {
                        apply_to_order(view, event);
                    }
                }
            }
            _ => {}
        }
        match &event.body {
            EventBody::OrderOptions { order_id, .. } | EventBody::OrderTrigger { order_id, .. } => {
                if let Some(view) = self.order_mut(*order_id)? {
                    apply_to_order(view, event);
                }
            }
            EventBody::Matching { market, event: MatchingEvent::Order(update) } => {
                if let Some(view) = self.order_mut(update.order_id)? {
                    apply_to_order(view, event);
                }
                let key = open_key(update.user_id, update.order_id);
                if update.status.is_open() {
                    self.batch.put(Family::Read, key, market.0.to_be_bytes().to_vec());
                } else {
                    self.batch.delete(Family::Read, key);
                }
            }
            EventBody::Matching { market, event: MatchingEvent::Trade(trade) } => {
                let view = TradeView::of(event, trade);
                self.batch.put(Family::Read, trade_key(*market, event.seq, event.idx), encode(&view));
                self.trade_orders.insert(trade.trade_id, [trade.maker_order_id, trade.taker_order_id]);
                for order_id in [trade.maker_order_id, trade.taker_order_id] {
                    if let Some(order) = self.order_mut(order_id)? {
                        apply_to_order(order, event);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Note that a command produced no events, so the covered sequence still advances.
    pub fn cover(&mut self, seq: u64) {
        self.last_seq = Some(seq);
    }

    /// Write everything (not synced: the journal can regenerate it).
    pub fn commit(mut self) -> Result<(), StoreError> {
        for (order_id, view) in std::mem::take(&mut self.orders) {
            self.batch.put(Family::Read, order_key(order_id), view.encode());
        }
        if let Some(seq) = self.last_seq {
            self.batch.put(Family::Meta, READ_MODEL_SEQ.as_bytes().to_vec(), seq.to_be_bytes().to_vec());
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        self.store.write(self.batch, Durability::None)
    }
}

/// The last sequence number whose events are in the read model.
pub fn covered_seq(store: &Store) -> Result<u64, StoreError> {
    Ok(store.meta_u64(READ_MODEL_SEQ)?.unwrap_or(0))
}

pub fn order(store: &Store, order_id: OrderId) -> Result<Option<OrderView>, StoreError> {
    let key = order_key(order_id);
    store
        .get(Family::Read, &key)?
        .map(|bytes| OrderView::decode(&bytes).map_err(|error| malformed(&key, error)))
        .transpose()
}

/// The user's latest order that carried this client order id, open or not.
pub fn order_by_client_id(
    store: &Store,
    user_id: UserId,
    client_order_id: &str,
) -> Result<Option<OrderView>, StoreError> {
    let key = client_order_key(user_id, client_order_id);
    let Some(value) = store.get(Family::Read, &key)? else { return Ok(None) };
    let order_id = u64::from_be_bytes(value.as_slice().try_into().map_err(|_| malformed(&key, "order id"))?);
    Ok(order(store, OrderId(order_id))?.filter(|view| view.user_id == user_id))
}

/// A user's open orders, in one market or all, by order id.
pub fn open_orders(store: &Store, user_id: UserId, market: Option<MarketId>) -> Result<Vec<OrderView>, StoreError> {
    let prefix = {
        let mut prefix = vec![b'u'];
        prefix.extend_from_slice(&user_id.0.to_be_bytes());
        prefix
    };
    let mut orders = Vec::new();
    for item in store.scan(Family::Read, &prefix, true) {
        let (key, value) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        let order_market =
            MarketId(u32::from_be_bytes(value.as_ref().try_into().map_err(|_| malformed(&key, "market id"))?));
        if market.is_some_and(|market| market != order_market) {
            continue;
        }
        let order_id = OrderId(u64::from_be_bytes(key[9..17].try_into().map_err(|_| malformed(&key, "order id"))?));
        if let Some(view) = order(store, order_id)? {
            orders.push(view);
        }
    }
    Ok(orders)
}

/// The newest trades of a market, newest first.
pub fn recent_trades(store: &Store, market: MarketId, limit: usize) -> Result<Vec<TradeView>, StoreError> {
    trades_since(store, market, 0, limit).map(|(trades, _)| trades)
}

/// The trades of a market at or after `since_ts_ns`, newest first, at most
/// `max`; `true` with them when there were more than `max` to read.
pub fn trades_since(
    store: &Store,
    market: MarketId,
    since_ts_ns: u64,
    max: usize,
) -> Result<(Vec<TradeView>, bool), StoreError> {
    let mut prefix = vec![b't'];
    prefix.extend_from_slice(&market.0.to_be_bytes());
    let start = trade_key(market, u64::MAX, u32::MAX);
    let mut trades = Vec::new();
    for item in store.scan(Family::Read, &start, false) {
        let (key, value) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        let trade: TradeView = decode(&value).map_err(|error| malformed(&key, error))?;
        if trade.ts_ns < since_ts_ns {
            break;
        }
        if trades.len() == max {
            return Ok((trades, true));
        }
        trades.push(trade);
    }
    Ok((trades, false))
}

/// Events from `from_seq` on: whole commands only, until at least `limit`
/// events are collected. Returns the events and the sequence to ask for next.
pub fn events_from(store: &Store, from_seq: u64, limit: usize) -> Result<(Vec<Event>, u64), StoreError> {
    let mut events: Vec<Event> = Vec::new();
    let mut next_seq = from_seq;
    for item in store.scan(Family::Events, &event_key(from_seq, 0), true) {
        let (key, value) = item?;
        let event: Event = decode(&value).map_err(|error| malformed(&key, error))?;
        if events.len() >= limit && events.last().is_some_and(|last| last.seq != event.seq) {
            break;
        }
        next_seq = event.seq + 1;
        events.push(event);
    }
    Ok((events, next_seq))
}

/// A user's account as of sequence `seq` (its last change at or before it).
pub fn account_at(store: &Store, user_id: UserId, seq: u64) -> Result<Option<(u64, AccountState)>, StoreError> {
    let prefix = user_key(b'a', user_id, 0)[..9].to_vec();
    if let Some(item) = store.scan(Family::Read, &user_key(b'a', user_id, seq), false).next() {
        let (key, value) = item?;
        if key.starts_with(&prefix) {
            let changed = u64::from_be_bytes(key[9..17].try_into().map_err(|_| malformed(&key, "seq"))?);
            return Ok(Some((changed, decode(&value).map_err(|error| malformed(&key, error))?)));
        }
    }
    Ok(None)
}

/// The exchange's ledger as of sequence `seq`.
pub fn ledger_at(store: &Store, seq: u64) -> Result<Option<(u64, LedgerState)>, StoreError> {
    if let Some(item) = store.scan(Family::Read, &ledger_key(seq), false).next() {
        let (key, value) = item?;
        if key.first() == Some(&b'L') && key.len() == 9 {
            let changed = u64::from_be_bytes(key[1..9].try_into().map_err(|_| malformed(&key, "seq"))?);
            return Ok(Some((changed, decode(&value).map_err(|error| malformed(&key, error))?)));
        }
    }
    Ok(None)
}

/// A user's change messages from `from_seq` on, optionally of one market only
/// (balance messages have no market and are left out then).
pub fn history(
    store: &Store,
    user_id: UserId,
    market: Option<MarketId>,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let prefix = user_key(b'h', user_id, 0)[..9].to_vec();
    let mut events = Vec::new();
    for item in store.scan(Family::Read, &history_key(user_id, from_seq, 0), true) {
        let (key, value) = item?;
        if !key.starts_with(&prefix) || events.len() >= limit {
            break;
        }
        let tagged = u32::from_be_bytes(value.as_ref().try_into().map_err(|_| malformed(&key, "market tag"))?);
        if market.is_some_and(|market| tagged != market.0 + 1) {
            continue;
        }
        let seq = u64::from_be_bytes(key[9..17].try_into().map_err(|_| malformed(&key, "seq"))?);
        let idx = u32::from_be_bytes(key[17..21].try_into().map_err(|_| malformed(&key, "idx"))?);
        if let Some(bytes) = store.get(Family::Events, &event_key(seq, idx))? {
            events.push(decode(&bytes).map_err(|error| malformed(&key, error))?);
        }
    }
    Ok(events)
}
