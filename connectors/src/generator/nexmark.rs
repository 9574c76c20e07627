//! `LOCATION 'nexmark'`: the Nexmark benchmark's people, auctions and bids, from the
//! `nexmark` crate's generator (the standard 1:3:46 mix, hot sellers, auctions, bidders and
//! channels). One event sequence underlies all three tables, so the sellers of `auction` are
//! people of `person` and the auctions of `bid` are auctions of `auction`; option `events`
//! picks the table. Row `i` of a table is its `i`-th event, a pure function of the options.

use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampNanosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use nexmark::EventGenerator;
use nexmark::config::NexmarkConfig;
use nexmark::event::{Event, EventType};

use super::options::GeneratorOptions;

/// The events of the standard mix, per 50: 1 person, 3 auctions, 46 bids.
const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const BID_PROPORTION: u64 = 46;
const DENOMINATOR: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// Which Nexmark table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexmarkTable {
    /// New people (sellers and bidders).
    Person,
    /// New auctions.
    Auction,
    /// Bids on auctions.
    Bid,
}

impl NexmarkTable {
    /// Every table, by its `events` option value.
    pub const ALL: [(&'static str, NexmarkTable); 3] = [
        ("person", NexmarkTable::Person),
        ("auction", NexmarkTable::Auction),
        ("bid", NexmarkTable::Bid),
    ];

    /// The table an `events` option value names (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(_, t)| *t)
    }

    fn event_type(self) -> EventType {
        match self {
            NexmarkTable::Person => EventType::Person,
            NexmarkTable::Auction => EventType::Auction,
            NexmarkTable::Bid => EventType::Bid,
        }
    }

    /// How many of the first `events` events of the mix are this table's.
    pub fn rows_among(self, events: u64) -> u64 {
        let (before, share) = match self {
            NexmarkTable::Person => (0, PERSON_PROPORTION),
            NexmarkTable::Auction => (PERSON_PROPORTION, AUCTION_PROPORTION),
            NexmarkTable::Bid => (PERSON_PROPORTION + AUCTION_PROPORTION, BID_PROPORTION),
        };
        let rest = (events % DENOMINATOR).saturating_sub(before).min(share);
        events / DENOMINATOR * share + rest
    }

    /// The table's columns (Nexmark's standard schema; times as TIMESTAMP).
    pub fn schema(self) -> SchemaRef {
        static PERSON: OnceLock<SchemaRef> = OnceLock::new();
        static AUCTION: OnceLock<SchemaRef> = OnceLock::new();
        static BID: OnceLock<SchemaRef> = OnceLock::new();
        let time =
            |name: &str| Field::new(name, DataType::Timestamp(TimeUnit::Nanosecond, None), false);
        let int = |name: &str| Field::new(name, DataType::Int64, false);
        let text = |name: &str| Field::new(name, DataType::Utf8, false);
        let schema = match self {
            NexmarkTable::Person => PERSON.get_or_init(|| {
                Arc::new(Schema::new(vec![
                    int("id"),
                    text("name"),
                    text("email_address"),
                    text("credit_card"),
                    text("city"),
                    text("state"),
                    time("date_time"),
                    text("extra"),
                ]))
            }),
            NexmarkTable::Auction => AUCTION.get_or_init(|| {
                Arc::new(Schema::new(vec![
                    int("id"),
                    text("item_name"),
                    text("description"),
                    int("initial_bid"),
                    int("reserve"),
                    time("date_time"),
                    time("expires"),
                    int("seller"),
                    int("category"),
                    text("extra"),
                ]))
            }),
            NexmarkTable::Bid => BID.get_or_init(|| {
                Arc::new(Schema::new(vec![
                    int("auction"),
                    int("bidder"),
                    int("price"),
                    text("channel"),
                    text("url"),
                    time("date_time"),
                    text("extra"),
                ]))
            }),
        };
        Arc::clone(schema)
    }
}

/// The generator's configuration: the standard one, with event times from `start_time` at
/// `rate` events per second (all tables together), and event ids from `first_event_id`.
fn config(opts: &GeneratorOptions, first_event_id: u64) -> NexmarkConfig {
    let rate = opts.rate.round().max(1.0) as usize;
    NexmarkConfig {
        base_time: u64::try_from(opts.start_time_nanos / 1_000_000).unwrap_or(0),
        first_rate: rate,
        next_rate: rate,
        first_event_id: usize::try_from(first_event_id).unwrap_or(0),
        ..NexmarkConfig::default()
    }
}

fn nanos(millis: u64) -> i64 {
    i64::try_from(millis)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000)
}

fn int(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Rows `[start, end)` of `table`, as one batch with [`NexmarkTable::schema`].
pub fn generate_nexmark(
    opts: &GeneratorOptions,
    table: NexmarkTable,
    first_event_id: u64,
    start: u64,
    end: u64,
) -> RecordBatch {
    let events = EventGenerator::new(config(opts, first_event_id))
        .with_type_filter(table.event_type())
        .with_offset(start)
        .take(usize::try_from(end.saturating_sub(start)).unwrap_or(0));
    let rows = usize::try_from(end.saturating_sub(start)).unwrap_or(0);
    let columns: Vec<ArrayRef> = match table {
        NexmarkTable::Person => {
            let (mut id, mut name, mut email, mut card, mut city, mut state, mut time, mut extra) = (
                Int64Builder::with_capacity(rows),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                TimestampNanosecondBuilder::with_capacity(rows),
                StringBuilder::new(),
            );
            for event in events {
                if let Event::Person(p) = event {
                    id.append_value(int(p.id));
                    name.append_value(&p.name);
                    email.append_value(&p.email_address);
                    card.append_value(&p.credit_card);
                    city.append_value(&p.city);
                    state.append_value(&p.state);
                    time.append_value(nanos(p.date_time));
                    extra.append_value(&p.extra);
                }
            }
            vec![
                Arc::new(id.finish()),
                Arc::new(name.finish()),
                Arc::new(email.finish()),
                Arc::new(card.finish()),
                Arc::new(city.finish()),
                Arc::new(state.finish()),
                Arc::new(time.finish()),
                Arc::new(extra.finish()),
            ]
        }
        NexmarkTable::Auction => {
            let mut id = Int64Builder::with_capacity(rows);
            let (mut item, mut description) = (StringBuilder::new(), StringBuilder::new());
            let (mut initial, mut reserve) = (
                Int64Builder::with_capacity(rows),
                Int64Builder::with_capacity(rows),
            );
            let (mut time, mut expires) = (
                TimestampNanosecondBuilder::with_capacity(rows),
                TimestampNanosecondBuilder::with_capacity(rows),
            );
            let (mut seller, mut category) = (
                Int64Builder::with_capacity(rows),
                Int64Builder::with_capacity(rows),
            );
            let mut extra = StringBuilder::new();
            for event in events {
                if let Event::Auction(a) = event {
                    id.append_value(int(a.id));
                    item.append_value(&a.item_name);
                    description.append_value(&a.description);
                    initial.append_value(int(a.initial_bid));
                    reserve.append_value(int(a.reserve));
                    time.append_value(nanos(a.date_time));
                    expires.append_value(nanos(a.expires));
                    seller.append_value(int(a.seller));
                    category.append_value(int(a.category));
                    extra.append_value(&a.extra);
                }
            }
            vec![
                Arc::new(id.finish()),
                Arc::new(item.finish()),
                Arc::new(description.finish()),
                Arc::new(initial.finish()),
                Arc::new(reserve.finish()),
                Arc::new(time.finish()),
                Arc::new(expires.finish()),
                Arc::new(seller.finish()),
                Arc::new(category.finish()),
                Arc::new(extra.finish()),
            ]
        }
        NexmarkTable::Bid => {
            let (mut auction, mut bidder, mut price) = (
                Int64Builder::with_capacity(rows),
                Int64Builder::with_capacity(rows),
                Int64Builder::with_capacity(rows),
            );
            let (mut channel, mut url) = (StringBuilder::new(), StringBuilder::new());
            let mut time = TimestampNanosecondBuilder::with_capacity(rows);
            let mut extra = StringBuilder::new();
            for event in events {
                if let Event::Bid(b) = event {
                    auction.append_value(int(b.auction));
                    bidder.append_value(int(b.bidder));
                    price.append_value(int(b.price));
                    channel.append_value(&b.channel);
                    url.append_value(&b.url);
                    time.append_value(nanos(b.date_time));
                    extra.append_value(&b.extra);
                }
            }
            vec![
                Arc::new(auction.finish()),
                Arc::new(bidder.finish()),
                Arc::new(price.finish()),
                Arc::new(channel.finish()),
                Arc::new(url.finish()),
                Arc::new(time.finish()),
                Arc::new(extra.finish()),
            ]
        }
    };
    // Infallible by construction (one value per event in every column, of the schema's type,
    // no nulls), as the other generators build their batches.
    RecordBatch::from(arrow::array::StructArray::new(
        table.schema().fields().clone(),
        columns,
        None,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tables_split_the_standard_mix_and_ranges_replay_exactly() {
        assert_eq!(NexmarkTable::Person.rows_among(100), 2);
        assert_eq!(NexmarkTable::Auction.rows_among(100), 6);
        assert_eq!(NexmarkTable::Bid.rows_among(100), 92);
        assert_eq!(NexmarkTable::Auction.rows_among(52), 3 + 1);
        let opts = GeneratorOptions::default();
        let all = generate_nexmark(&opts, NexmarkTable::Bid, 0, 0, 200);
        assert_eq!(all.num_rows(), 200);
        assert_eq!(
            all.slice(50, 30),
            generate_nexmark(&opts, NexmarkTable::Bid, 0, 50, 80)
        );
        // Sellers are people of the person table; bids are on auctions of the auction table.
        let people = generate_nexmark(&opts, NexmarkTable::Person, 0, 0, 100);
        let auctions = generate_nexmark(&opts, NexmarkTable::Auction, 0, 0, 300);
        let ids = |b: &RecordBatch, c: usize| -> Vec<i64> {
            b.column(c)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        let person_ids = ids(&people, 0);
        assert!(ids(&auctions, 7).iter().all(|s| person_ids.contains(s)));
        let auction_ids = ids(&auctions, 0);
        let bids_on_known = ids(&all, 0)
            .iter()
            .filter(|a| auction_ids.contains(a))
            .count();
        assert!(bids_on_known > 150, "{bids_on_known} of 200 bids");
    }
}
