//! The read model (the query side): built only from events, never by reading
//! module state, and stored beside the journal.
//!
//! Keys in the `read` family, each starting with a one-byte namespace:
//! - `o` order id → [`OrderView`], the order's latest state and its fills;
//! - `u` user id, order id → market id, present while the order is open;
//! - `t` market id, seq, idx → [`TradeView`], so "newest trades" is a reverse scan;
//! - `A` user id, seq → the user's [`AccountRecord`] after a command that
//!   changed it (balance, positions with their funding index, resting
//!   exposure), so "the account as of sequence N" is one reverse seek;
//! - `M` market id, seq → the market's [`MarketRecord`] (mark, funding index)
//!   after a command that changed it: an account is valued from its record
//!   and these, with [`exhost_guest_sdk::margin::account_state`], when read;
//! - `a` user id, seq → a whole `AccountState`, as position modules before
//!   state version 3 sent it after every change (read, no longer written by
//!   today's module);
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

use std::collections::{BTreeMap, BTreeSet};

use exhost_engine::{Event, EventBody, MarketId};
use exhost_guest_sdk::codec::{decode, decode_prefix, encode, encode_into};
use exhost_guest_sdk::margin::{ByMarket, Exposure, MarketLookup, MarketView, PositionRecord};
use exhost_guest_sdk::{
    AccountState, LedgerState, MarketRisk, MarketTerms, MatchingEvent, OrderId, OrderOptions, OrderStatus, OrderType,
    PositionEvent, Reason, SelfTradePrevention, Side, TimeInForce, Trade, TradeId, Trigger, UserId,
};
use exhost_store::{Batch, Durability, Family, Store, StoreError, event_key};
use serde::{Deserialize, Serialize};

pub const READ_MODEL_SEQ: &str = "read_model_seq";
/// Set once the `A` and `M` keys cover the event log (data directories
/// written before they existed are indexed once, at start).
pub const READ_MODEL_RECORDS: &str = "read_model_records";

/// A user's account as the lean change messages describe it: what changes
/// only when the user's own balance, positions or orders do. Figures that
/// move with the marks (equity, margins, liquidation prices) are computed
/// from it when it is read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub balance_units: i128,
    pub positions: ByMarket<PositionRecord>,
    pub exposure: ByMarket<Exposure>,
}

impl AccountRecord {
    /// What a whole account message of an older module says of the same
    /// account. Before state version 3 funding settled at once, so every
    /// position is settled up to index 0 (where a migrated market starts);
    /// such a message did not carry the resting exposure.
    fn of_state(state: &AccountState) -> AccountRecord {
        AccountRecord {
            balance_units: state.balance_units,
            positions: state
                .positions
                .iter()
                .map(|position| {
                    let record = PositionRecord {
                        size_lots: position.size_lots,
                        cost: position.cost,
                        realized_units: position.realized_pnl_units,
                        funding_index: 0,
                    };
                    (position.market, record)
                })
                .collect(),
            exposure: ByMarket::new(),
        }
    }
}

/// What valuing positions needs of a market that changes with commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketRecord {
    pub mark_ticks: Option<u64>,
    /// The cumulative funding index (settlement units × 10⁸ per lot long).
    pub funding_index: i128,
}

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

fn market_key(market: MarketId, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(13);
    key.push(b'M');
    key.extend_from_slice(&market.0.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
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
            PositionEvent::FundingSettled { user_id, market, .. } => (vec![*user_id], Some(*market)),
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
    /// Accounts and markets read or changed in this run, newest state.
    accounts: BTreeMap<UserId, AccountRecord>,
    markets: BTreeMap<MarketId, MarketRecord>,
    /// Those changed by the command being applied, written when the next begins.
    accounts_changed: BTreeSet<UserId>,
    markets_changed: BTreeSet<MarketId>,
    /// What each order followed in this run adds to its user's resting
    /// exposure since its last update (`None`: nothing, not resting), the
    /// way the position module follows the book.
    resting: BTreeMap<OrderId, Option<Resting>>,
    /// Rebuilding from the event log (`rebuild_records`): order views hold
    /// their final state, so an order not followed here rests nowhere.
    rebuilding: bool,
    last_seq: Option<u64>,
}

/// One resting order's part in its user's exposure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resting {
    user_id: UserId,
    market: MarketId,
    side: Side,
    remaining_lots: u64,
    price_ticks: u64,
}

impl Resting {
    fn of(market: MarketId, update: &exhost_guest_sdk::OrderUpdate) -> Option<Resting> {
        update.status.is_open().then(|| Resting {
            user_id: update.user_id,
            market,
            side: update.side,
            remaining_lots: update.qty_lots.saturating_sub(update.filled_lots),
            price_ticks: update.price_ticks,
        })
    }
}

/// `Exposure::add` and `remove`, saturating: the read model must not panic
/// on an order the position module did not follow (one resting before it
/// was installed), it only values it differently until its next message.
fn add_resting(exposure: &mut Exposure, resting: &Resting, sign: i8) {
    let notional = resting.remaining_lots as u128 * resting.price_ticks as u128;
    let (lots, value) = match resting.side {
        Side::Buy => (&mut exposure.buy_lots, &mut exposure.buy_notional),
        Side::Sell => (&mut exposure.sell_lots, &mut exposure.sell_notional),
    };
    if sign > 0 {
        *lots = lots.saturating_add(resting.remaining_lots);
        *value = value.saturating_add(notional);
    } else {
        *lots = lots.saturating_sub(resting.remaining_lots);
        *value = value.saturating_sub(notional);
    }
}

impl<'a> ReadModelWriter<'a> {
    pub fn new(store: &'a Store) -> Self {
        ReadModelWriter {
            store,
            batch: Batch::default(),
            orders: BTreeMap::new(),
            trade_orders: BTreeMap::new(),
            accounts: BTreeMap::new(),
            markets: BTreeMap::new(),
            accounts_changed: BTreeSet::new(),
            markets_changed: BTreeSet::new(),
            resting: BTreeMap::new(),
            rebuilding: false,
            last_seq: None,
        }
    }

    /// Number of events, orders and accounts waiting to be written.
    pub fn pending(&self) -> usize {
        self.batch.len() + self.orders.len() + self.accounts.len()
    }

    fn account_mut(&mut self, user_id: UserId) -> Result<&mut AccountRecord, StoreError> {
        if !self.accounts.contains_key(&user_id) {
            let record = lean_at(self.store, user_id, u64::MAX)?.map(|(_, record)| record);
            self.accounts.insert(user_id, record.unwrap_or_default());
        }
        self.accounts_changed.insert(user_id);
        Ok(self.accounts.get_mut(&user_id).expect("inserted above"))
    }

    fn market(&mut self, market: MarketId) -> Result<&mut MarketRecord, StoreError> {
        if !self.markets.contains_key(&market) {
            let record = market_at(self.store, market, u64::MAX)?.map(|(_, record)| record);
            self.markets.insert(market, record.unwrap_or_default());
        }
        Ok(self.markets.get_mut(&market).expect("inserted above"))
    }

    /// Write the account and market records the command at `seq` changed.
    fn flush_records(&mut self, seq: u64) {
        for user_id in std::mem::take(&mut self.accounts_changed) {
            if let Some(record) = self.accounts.get(&user_id) {
                self.batch.put(Family::Read, user_key(b'A', user_id, seq), encode(record));
            }
        }
        for market in std::mem::take(&mut self.markets_changed) {
            if let Some(record) = self.markets.get(&market) {
                self.batch.put(Family::Read, market_key(market, seq), encode(record));
            }
        }
    }

    /// An order update moves its user's resting exposure: out goes what the
    /// order added at its last update, in what it adds now.
    fn follow_order(&mut self, market: MarketId, update: &exhost_guest_sdk::OrderUpdate) -> Result<(), StoreError> {
        let before = match self.resting.get(&update.order_id) {
            Some(before) => *before,
            None if self.rebuilding => None,
            // Followed in an earlier run: its view holds its last update.
            None => self.order_mut(update.order_id)?.and_then(|view| {
                view.status.is_open().then_some(Resting {
                    user_id: view.user_id,
                    market: view.market,
                    side: view.side,
                    remaining_lots: view.qty_lots.saturating_sub(view.filled_lots),
                    price_ticks: view.price_ticks,
                })
            }),
        };
        let after = Resting::of(market, update);
        if before == after {
            return Ok(());
        }
        for (resting, sign) in [(before, -1), (after, 1)] {
            let Some(resting) = resting else { continue };
            let account = self.account_mut(resting.user_id)?;
            let exposure = account.exposure.entry(resting.market).or_default();
            add_resting(exposure, &resting, sign);
            if exposure.is_empty() {
                account.exposure.remove(&resting.market);
            }
        }
        if after.is_some() {
            self.resting.insert(update.order_id, after);
        } else {
            self.resting.remove(&update.order_id);
        }
        Ok(())
    }

    /// What an event changes of the account and market records.
    fn apply_to_records(&mut self, event: &Event) -> Result<(), StoreError> {
        let event = match &event.body {
            EventBody::OrderReceived { order_id, .. } => {
                // Not resting until the book says so.
                self.resting.insert(*order_id, None);
                return Ok(());
            }
            EventBody::Matching { market, event: MatchingEvent::Order(update) } => {
                return self.follow_order(*market, update);
            }
            EventBody::Position(event) => event,
            _ => return Ok(()),
        };
        match event {
            PositionEvent::Balance { user_id, balance_units, .. } => {
                self.account_mut(*user_id)?.balance_units = *balance_units;
            }
            PositionEvent::Position { user_id, market, size_lots, cost, realized_pnl_units } => {
                // A position settles its funding as it changes: its index is the market's now.
                let funding_index = self.market(*market)?.funding_index;
                let record = PositionRecord {
                    size_lots: *size_lots,
                    cost: *cost,
                    realized_units: *realized_pnl_units,
                    funding_index,
                };
                self.account_mut(*user_id)?.positions.insert(*market, record);
            }
            PositionEvent::FundingSettled { user_id, market, index, .. } => {
                self.account_mut(*user_id)?.positions.entry(*market).or_default().funding_index = *index;
            }
            PositionEvent::Exposure { user_id, market, exposure } => {
                let account = self.account_mut(*user_id)?;
                if exposure.is_empty() {
                    account.exposure.remove(market);
                } else {
                    account.exposure.insert(*market, *exposure);
                }
            }
            PositionEvent::Account(state) => {
                // An older module's whole account: its positions and balance, and
                // the exposure this record knew (such messages do not carry it).
                let account = self.account_mut(state.user_id)?;
                let exposure = std::mem::take(&mut account.exposure);
                *account = AccountRecord { exposure, ..AccountRecord::of_state(state) };
            }
            PositionEvent::MarkPrice { market, price_ticks } => {
                self.market(*market)?.mark_ticks = Some(*price_ticks);
                self.markets_changed.insert(*market);
            }
            PositionEvent::FundingIndex { market, index, .. } => {
                self.market(*market)?.funding_index = *index;
                self.markets_changed.insert(*market);
            }
            _ => {}
        }
        Ok(())
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
        if let Some(last) = self.last_seq
            && last != event.seq
        {
            self.flush_records(last);
        }
        self.last_seq = Some(event.seq);
        // Before the order views change: following an order reads its last update.
        self.apply_to_records(event)?;
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
        if let Some(last) = self.last_seq
            && last != seq
        {
            self.flush_records(last);
        }
        self.last_seq = Some(seq);
    }

    /// Write everything (not synced: the journal can regenerate it).
    pub fn commit(mut self) -> Result<(), StoreError> {
        if let Some(seq) = self.last_seq {
            self.flush_records(seq);
        }
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

/// The newest entry at or before `seq` of the keys `namespace`, `id`, seq.
fn newest_at<T: serde::de::DeserializeOwned>(
    store: &Store,
    prefix: &[u8],
    seq: u64,
) -> Result<Option<(u64, T)>, StoreError> {
    let mut from = prefix.to_vec();
    from.extend_from_slice(&seq.to_be_bytes());
    if let Some(item) = store.scan(Family::Read, &from, false).next() {
        let (key, value) = item?;
        if key.starts_with(prefix) && key.len() == prefix.len() + 8 {
            let at = &key[prefix.len()..];
            let changed = u64::from_be_bytes(at.try_into().map_err(|_| malformed(&key, "seq"))?);
            return Ok(Some((changed, decode(&value).map_err(|error| malformed(&key, error))?)));
        }
    }
    Ok(None)
}

/// A user's newest account record at or before `seq`, and the sequence it was written at.
pub fn lean_at(store: &Store, user_id: UserId, seq: u64) -> Result<Option<(u64, AccountRecord)>, StoreError> {
    newest_at(store, &user_key(b'A', user_id, 0)[..9], seq)
}

/// A user's newest whole account message at or before `seq` (modules before state v3).
fn whole_at(store: &Store, user_id: UserId, seq: u64) -> Result<Option<(u64, AccountState)>, StoreError> {
    newest_at(store, &user_key(b'a', user_id, 0)[..9], seq)
}

/// A market's mark and funding index at or before `seq`, and when they last changed.
pub fn market_at(store: &Store, market: MarketId, seq: u64) -> Result<Option<(u64, MarketRecord)>, StoreError> {
    newest_at(store, &market_key(market, 0)[..5], seq)
}

/// The markets as the valuation reads them at one sequence: fixed terms from
/// the directory, marks and funding indexes from the `M` keys.
struct MarketsAt {
    markets: BTreeMap<MarketId, (MarketRisk, Vec<exhost_guest_sdk::RiskTier>, MarketRecord)>,
}

impl MarketLookup for MarketsAt {
    fn view(&self, market: MarketId) -> Option<MarketView<'_>> {
        self.markets.get(&market).map(|(risk, tiers, record)| MarketView {
            risk,
            tiers,
            mark_ticks: record.mark_ticks,
            funding_index: record.funding_index,
        })
    }
}

/// A user's account as of sequence `seq`: its newest record at or before
/// it, valued at the marks and funding indexes of that point.
pub fn account_at(
    store: &Store,
    directory: &crate::directory::Directory,
    user_id: UserId,
    seq: u64,
) -> Result<Option<AccountState>, StoreError> {
    let lean = lean_at(store, user_id, seq)?;
    if let Some((written, state)) = whole_at(store, user_id, seq)?
        && lean.as_ref().is_none_or(|(lean_seq, _)| *lean_seq <= written)
    {
        // A whole message is exact as sent while none of its marks has moved
        // since (an older module sent it again after every move of them).
        let mut moved = false;
        for position in &state.positions {
            moved |= market_at(store, position.market, seq)?.is_some_and(|(changed, _)| changed > written);
        }
        if !moved || lean.is_none() {
            return Ok(Some(state));
        }
    }
    let Some((_, record)) = lean else { return Ok(None) };
    let mut markets = MarketsAt { markets: BTreeMap::new() };
    for market in record.positions.keys().chain(record.exposure.keys()) {
        let Some(spec) = directory.markets.get(market.0 as usize) else { continue };
        if directory.settlement_asset.as_deref() != Some(spec.quote.as_str()) {
            continue;
        }
        let Some(risk) = spec.position_risk(*market) else { continue };
        let tiers = directory.market_terms.get(market).map(|terms: &MarketTerms| terms.tiers.clone());
        let at = market_at(store, *market, seq)?.map(|(_, record)| record).unwrap_or_default();
        markets.markets.insert(*market, (risk, tiers.unwrap_or_default(), at));
    }
    let margin = exhost_guest_sdk::margin::account_state(
        user_id,
        record.balance_units,
        &record.positions,
        &record.exposure,
        &markets,
    );
    Ok(Some(margin))
}

/// Build the account and market records (`A`, `M`) of an event log written
/// before they existed, once (a no-op after): every event through the same
/// code as the live writer. Older hosts kept whole account messages only;
/// valuing an account at a later mark needs its record.
pub fn rebuild_records(store: &Store) -> Result<(), StoreError> {
    if store.meta_u64(READ_MODEL_RECORDS)?.is_some() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut writer = ReadModelWriter::new(store);
    writer.rebuilding = true;
    let mut events = 0u64;
    for item in store.scan(Family::Events, &[], true) {
        let (key, value) = item?;
        let event: Event = decode(&value).map_err(|error| malformed(&key, error))?;
        if let Some(last) = writer.last_seq
            && last != event.seq
        {
            writer.flush_records(last);
            if writer.batch.len() >= 50_000 {
                store.write(std::mem::take(&mut writer.batch), Durability::None)?;
                writer.accounts.clear();
                writer.markets.clear();
            }
        }
        writer.last_seq = Some(event.seq);
        writer.apply_to_records(&event)?;
        events += 1;
    }
    if let Some(last) = writer.last_seq {
        writer.flush_records(last);
    }
    let mut batch = std::mem::take(&mut writer.batch);
    batch.put(Family::Meta, READ_MODEL_RECORDS.as_bytes().to_vec(), 1u64.to_be_bytes().to_vec());
    store.write(batch, Durability::None)?;
    if events > 0 {
        tracing::info!(
            events,
            seconds = started.elapsed().as_secs_f64(),
            "read model: built the account records of an older event log"
        );
    }
    Ok(())
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
