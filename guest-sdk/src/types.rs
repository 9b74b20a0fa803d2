//! Identifiers, quantities and the numbered enums that cross the module boundary.
//!
//! Every enum here is a *stable* enum: each variant has a fixed numeric code that is
//! what goes on the wire, into the journal and into snapshots. Codes are never reused
//! or renumbered; new variants take new codes. Decoding an unknown code is an error,
//! not a silent default.

use core::fmt;

use serde::{Deserialize, Serialize};

/// Defines a fieldless enum with fixed wire codes, serialized as its code.
macro_rules! stable_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr($repr)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $code, )+
        }

        impl $name {
            /// Every variant, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The fixed wire code of this variant.
            pub const fn code(self) -> $repr {
                self as $repr
            }

            /// The variant with this wire code, if there is one.
            pub const fn from_code(code: $repr) -> Option<Self> {
                match code {
                    $( $code => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// The stable snake_case name used in JSON and error codes.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The variant with this snake_case name, if there is one.
            pub fn from_str_name(text: &str) -> Option<Self> {
                match text {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                <$repr as Serialize>::serialize(&self.code(), serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let code = <$repr as Deserialize>::deserialize(deserializer)?;
                $name::from_code(code).ok_or_else(|| {
                    <D::Error as serde::de::Error>::custom(concat!("unknown ", stringify!($name), " code"))
                })
            }
        }
    };
}

stable_enum! {
    /// The side of an order.
    pub enum Side: u8 {
        Buy = 1 => "buy",
        Sell = 2 => "sell",
    }
}

impl Side {
    /// The side an order of this side trades against.
    pub const fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

stable_enum! {
    /// Whether an order carries a limit price.
    pub enum OrderType: u8 {
        Limit = 1 => "limit",
        Market = 2 => "market",
    }
}

stable_enum! {
    /// What happens to the part of an order that does not match on arrival.
    pub enum TimeInForce: u8 {
        /// Good till cancelled: the remainder rests in the book.
        Gtc = 1 => "gtc",
        /// Immediate or cancel: the remainder is cancelled.
        Ioc = 2 => "ioc",
        /// Fill or kill: fill completely at once or change nothing.
        Fok = 3 => "fok",
        /// Maker only: refused if it would match on arrival.
        PostOnly = 4 => "post_only",
        /// Good till date: like `gtc` until the order's expire time
        /// ([`OrderOptions::expire_time_ns`](crate::matching::OrderOptions)), then cancelled (`expired`).
        Gtd = 5 => "gtd",
    }
}

stable_enum! {
    /// Self-trade prevention: what to do when the next resting order to match
    /// belongs to the taker's own user.
    pub enum SelfTradePrevention: u8 {
        CancelTaker = 1 => "cancel_taker",
        CancelMaker = 2 => "cancel_maker",
        CancelBoth = 3 => "cancel_both",
    }
}

stable_enum! {
    /// The state of an order after a command.
    pub enum OrderStatus: u8 {
        /// Resting in the book with no fills.
        New = 1 => "new",
        /// Resting in the book with some fills.
        PartiallyFilled = 2 => "partially_filled",
        /// Nothing left.
        Filled = 3 => "filled",
        /// The remainder was cancelled; the order is out of the book.
        Cancelled = 4 => "cancelled",
        /// Refused; nothing changed.
        Rejected = 5 => "rejected",
        /// A conditional order waiting for its trigger: open, not in the book.
        Untriggered = 6 => "untriggered",
    }
}

stable_enum! {
    /// The price a conditional order watches.
    pub enum TriggerBy: u8 {
        /// The mark price, which the position module sets and the host hands
        /// to the book (`MatchingCommand::Mark`).
        Mark = 1 => "mark",
        /// The book's own last trade price.
        Last = 2 => "last",
    }
}

impl TimeInForce {
    /// The [`ABI_REVISION`](crate::abi::ABI_REVISION) that added it.
    pub const fn revision(self) -> u32 {
        match self {
            TimeInForce::Gtd => 1,
            _ => 0,
        }
    }
}

impl OrderStatus {
    /// Whether an order in this status is open: resting in the book, or
    /// waiting for its trigger (margined either way).
    pub const fn is_open(self) -> bool {
        matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled | OrderStatus::Untriggered)
    }
}

stable_enum! {
    /// Why an order was rejected or cancelled. Codes 1..=99 are rejections (the
    /// command changed nothing), 100.. are reasons a remainder was cancelled.
    pub enum Reason: u16 {
        InvalidPrice = 1 => "invalid_price",
        InvalidQuantity = 2 => "invalid_quantity",
        WouldCross = 3 => "would_cross",
        NotFillable = 4 => "not_fillable",
        UnknownOrder = 5 => "unknown_order",
        DuplicateOrderId = 6 => "duplicate_order_id",
        NothingToAmend = 7 => "nothing_to_amend",
        InsufficientMargin = 8 => "insufficient_margin",
        ReduceOnlyViolation = 9 => "reduce_only_violation",
        /// The module trapped while applying the command; its state was rebuilt
        /// to the state before the command.
        ModuleTrap = 10 => "module_trap",
        /// The module ran out of fuel while applying the command.
        ModuleOutOfFuel = 11 => "module_out_of_fuel",
        /// The module's reply could not be decoded, or it refused the call.
        ModuleProtocol = 12 => "module_protocol",
        UnknownMarket = 13 => "unknown_market",
        MarketExists = 14 => "market_exists",
        UnknownUser = 15 => "unknown_user",
        UnknownAsset = 16 => "unknown_asset",
        /// A market order needs a mark price to be margined, and the market has none yet.
        NoMarkPrice = 17 => "no_mark_price",
        /// The command would need a module that is not installed.
        NoModule = 18 => "no_module",
        /// The named per-command limit of follow-up actions (liquidations) was reached.
        FollowUpLimit = 19 => "follow_up_limit",
        /// A module of that kind is already installed.
        AlreadyInstalled = 20 => "already_installed",
        /// The module tried to grow its memory past what one call, or the
        /// instance, may have; the command was undone.
        ModuleMemoryLimit = 21 => "module_memory_limit",
        /// A new order reused the client order id of one of the user's open orders.
        DuplicateClientOrderId = 22 => "duplicate_client_order_id",
        /// `gtd` without an expire time, an expire time without `gtd`, or one
        /// not after the command's timestamp.
        InvalidExpireTime = 23 => "invalid_expire_time",
        /// A display quantity of zero, above the order's quantity, or on an
        /// order that does not rest (market, `ioc`, `fok`).
        InvalidDisplayQty = 24 => "invalid_display_qty",
        /// The market's matching module does not take this kind of order (an
        /// iceberg, a `gtd` order): its rules have no place for it.
        UnsupportedOrder = 25 => "unsupported_order",
        /// A trigger price of zero or above the market's highest price.
        InvalidTriggerPrice = 26 => "invalid_trigger_price",
        /// The watched price already meets the trigger: the order would
        /// trigger on arrival (place a market or limit order instead).
        WouldTrigger = 27 => "would_trigger",
        /// The installed module was built before this command existed (an
        /// older ABI revision): it could not read it.
        UnsupportedByModule = 28 => "unsupported_by_module",
        UserCancel = 100 => "user_cancel",
        MassCancel = 101 => "mass_cancel",
        /// The remainder of an IOC or market order.
        Unfilled = 102 => "unfilled",
        SelfTrade = 103 => "self_trade",
        /// Amended to a quantity at or below the filled quantity.
        AmendedToFilled = 104 => "amended_to_filled",
        /// The named per-command fill limit was reached.
        FillLimit = 105 => "fill_limit",
        /// The book holds its named maximum of resting orders.
        BookFull = 106 => "book_full",
        /// A `gtd` order reached its expire time.
        Expired = 107 => "expired",
    }
}

impl Reason {
    /// Whether this reason marks a rejection (the command changed nothing).
    pub const fn is_rejection(self) -> bool {
        (self as u16) < 100
    }
}

/// Defines a transparent integer newtype used as an identifier or quantity.
macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_type! {
    /// A user of the exchange, assigned by the host.
    UserId
}

/// A market, numbered by the host in creation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MarketId(pub u32);

impl fmt::Display for MarketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
id_type! {
    /// An order, assigned by the host: the sequence number of the command that placed it.
    OrderId
}
id_type! {
    /// A trade, assigned by the matching module, unique within its market.
    TradeId
}

/// Where a command sits in the exchange's history. Time and sequence come in
/// the command; a module never reads a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandContext {
    /// The sequence number the sequencer gave the command.
    pub seq: u64,
    /// Nanoseconds since the Unix epoch, assigned by the sequencer; never decreases.
    pub ts_ns: u64,
}
