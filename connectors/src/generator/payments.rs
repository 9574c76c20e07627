//! The `payments` stream: card payments that look like real data, a pure function of
//! `(seed, row)` like `rides`.
//!
//! It exists so that parity tests and benches see what production data holds: NULLs in every
//! nullable column, NaN (both signs), ±0.0 and ±inf amounts, refunds, hot keys (a few users
//! and merchants take most payments), duplicate event times and rows exactly on whole seconds
//! (window edges). Event times lag their base time by whole 250 ms steps, at most `disorder`,
//! so a watermark of `event_time - <disorder>` never makes a row late.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanArray, Decimal128Array, Float64Array, Int32Array, Int64Array, StringArray,
    StructArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::options::{BaseTimes, GeneratorOptions};
use super::rides::{row_hash, splitmix64, unit};

/// Merchants, hottest first; the empty name and non-ASCII names are deliberate.
const MERCHANTS: [&str; 16] = [
    "Acme Grocery",
    "Metro Transit",
    "Café Zürich",
    "東京ラーメン",
    "",
    "Corner Books",
    "Fuel & Go",
    "Pharma+",
    "São Paulo Eats",
    "Cinema 7",
    "Hardware Hub",
    "Pet Palace",
    "Tea, Coffee & Co",
    "\"Quoted\" Shop",
    "Night Owl Bar",
    "Zeta Telecom",
];

/// Event-time lags come in steps of this many nanoseconds (so times collide and land on edges).
const LAG_STEP_NANOS: u64 = 250_000_000;

/// The schema of the `payments` stream.
pub fn payments_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("payment_id", DataType::Int64, false),
            Field::new("user_id", DataType::Int64, true),
            Field::new("merchant", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
            Field::new("fee", DataType::Decimal128(10, 2), true),
            Field::new("approved", DataType::Boolean, true),
            Field::new("channel", DataType::Int32, true),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
        ]))
    }))
}

/// An amount: NULL 3%, NaN 1% (half with the sign bit set, as `0.0/0.0` gives on x86), +0.0
/// and -0.0 1% each, ±inf 0.5% each, refunds 5%, else cents between 0.01 and ~2000.
fn amount(h: u64) -> Option<f64> {
    let u = unit(h);
    let cents = |h: u64| ((unit(h).powi(3) * 200_000.0) as i64 + 1) as f64 / 100.0;
    let h2 = splitmix64(h);
    Some(match u {
        u if u < 0.03 => return None,
        u if u < 0.035 => f64::NAN,
        u if u < 0.04 => -f64::NAN,
        u if u < 0.05 => 0.0,
        u if u < 0.06 => -0.0,
        u if u < 0.065 => f64::INFINITY,
        u if u < 0.07 => f64::NEG_INFINITY,
        u if u < 0.12 => -cents(h2),
        _ => cents(h2),
    })
}

/// Rows `[start, end)` of the `payments` stream, as one batch with [`payments_schema`].
///
/// ```
/// use volley_connectors::generator::{GeneratorOptions, generate_payments};
///
/// let opts = GeneratorOptions::default();
/// let all = generate_payments(&opts, 0, 10);
/// assert_eq!(all.slice(4, 3), generate_payments(&opts, 4, 7));
/// ```
pub fn generate_payments(opts: &GeneratorOptions, start: u64, end: u64) -> RecordBatch {
    let len = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
    let mut payment_id = Vec::with_capacity(len);
    let mut user_id = Vec::with_capacity(len);
    let mut merchant = Vec::with_capacity(len);
    let mut amounts = Vec::with_capacity(len);
    let mut fee = Vec::with_capacity(len);
    let mut approved = Vec::with_capacity(len);
    let mut channel = Vec::with_capacity(len);
    let mut event_time = Vec::with_capacity(len);

    let users = opts.riders.max(1);
    let disorder = u64::try_from(opts.disorder.as_nanos()).unwrap_or(u64::MAX);
    let lag_steps = disorder / LAG_STEP_NANOS;
    let mut base_times = BaseTimes::from_row(opts, start);
    for i in start..end {
        let h0 = row_hash(opts.seed ^ 0x9A7, i);
        let h: Vec<u64> = std::iter::successors(Some(h0), |h| Some(splitmix64(*h)))
            .take(8)
            .collect();

        payment_id.push(i as i64);
        let u = unit(h[0]);
        user_id.push(match u {
            u if u < 0.02 => None,
            u if u < 0.27 => Some(1),
            u if u < 0.39 => Some(2),
            u if u < 0.45 => Some(3),
            _ => {
                let v = unit(h[1]);
                Some(((v * v * users as f64) as u64).min(users - 1) as i64 + 1)
            }
        });
        let m = unit(h[2]);
        merchant.push(if m < 0.03 {
            None
        } else {
            // Squared-uniform: the first merchants are the hot ones.
            let pick = (((m - 0.03) / 0.97).powi(2) * MERCHANTS.len() as f64) as usize;
            Some(MERCHANTS[pick.min(MERCHANTS.len() - 1)])
        });
        let a = amount(h[3]);
        amounts.push(a);
        fee.push(
            a.filter(|a| a.is_finite())
                .map(|a| ((a.abs() * 2.9 + 30.0).round()) as i128),
        );
        let p = unit(h[4]);
        approved.push(match p {
            p if p < 0.02 => None,
            p if p < 0.10 => Some(false),
            _ => Some(true),
        });
        channel.push((unit(h[5]) >= 0.02).then(|| (h[5] % 16) as i32));

        let base = base_times.advance();
        let lag = if lag_steps == 0 {
            0
        } else {
            (h[6] % (lag_steps + 1)) * LAG_STEP_NANOS
        };
        let mut t = base.saturating_sub(i64::try_from(lag).unwrap_or(i64::MAX));
        // 5%: exactly on a whole second (a window edge), when that stays within the bound.
        if unit(h[7]) < 0.05 {
            let edge = t - t.rem_euclid(1_000_000_000);
            if u64::try_from(base - edge).is_ok_and(|d| d <= disorder) {
                t = edge;
            }
        }
        event_time.push(t);
    }

    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(payment_id)),
        Arc::new(Int64Array::from(user_id)),
        Arc::new(StringArray::from(merchant)),
        Arc::new(Float64Array::from(amounts)),
        Arc::new(Decimal128Array::from(fee).with_data_type(DataType::Decimal128(10, 2))),
        Arc::new(BooleanArray::from(approved)),
        Arc::new(Int32Array::from(channel)),
        Arc::new(TimestampNanosecondArray::from(event_time)),
    ];
    RecordBatch::from(StructArray::new(
        payments_schema().fields().clone(),
        columns,
        None,
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow::array::{Array, AsArray};
    use arrow::compute::concat_batches;
    use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType};

    use super::*;

    fn opts() -> GeneratorOptions {
        GeneratorOptions {
            rate: 20.0,
            disorder: Duration::from_secs(2),
            riders: 200,
            ..GeneratorOptions::default()
        }
    }

    #[test]
    fn ranges_regenerate_exactly_whatever_the_cuts() {
        let whole = generate_payments(&opts(), 0, 1000);
        for cut in [1u64, 7, 999] {
            let parts: Vec<_> = (0..1000u64)
                .step_by(cut as usize)
                .map(|s| generate_payments(&opts(), s, (s + cut).min(1000)))
                .collect();
            assert_eq!(concat_batches(&payments_schema(), &parts).unwrap(), whole);
        }
    }

    #[test]
    fn it_holds_what_real_data_holds() {
        let batch = generate_payments(&opts(), 0, 20_000);
        for (i, column) in batch.columns().iter().enumerate() {
            let field = batch.schema().field(i).clone();
            assert_eq!(
                field.is_nullable(),
                column.null_count() > 0,
                "column {}: NULLs exactly in the nullable columns",
                field.name()
            );
        }
        let amount = batch.column(3).as_primitive::<Float64Type>();
        let count = |f: &dyn Fn(f64) -> bool| amount.iter().flatten().filter(|a| f(*a)).count();
        assert!(count(&|a| a.is_nan() && a.is_sign_negative()) > 20);
        assert!(count(&|a| a.is_nan() && a.is_sign_positive()) > 20);
        assert!(count(&|a| a == 0.0 && a.is_sign_negative()) > 50);
        assert!(count(&|a| a == 0.0 && a.is_sign_positive()) > 50);
        assert!(count(&|a| a == f64::INFINITY) > 20);
        assert!(count(&|a| a == f64::NEG_INFINITY) > 20);
        assert!(count(&|a| a < 0.0 && a.is_finite()) > 500);
        let users = batch.column(1).as_primitive::<Int64Type>();
        let hot = users.iter().filter(|u| *u == Some(1)).count();
        assert!(hot > 4_000, "user 1 is hot: {hot}");
        let times = batch.column(7).as_primitive::<TimestampNanosecondType>();
        let edges = times
            .values()
            .iter()
            .filter(|t| t.rem_euclid(1_000_000_000) == 0)
            .count();
        assert!(edges > 1_000, "rows on whole seconds: {edges}");
        let mut sorted = times.values().to_vec();
        sorted.sort_unstable();
        let duplicates = sorted.windows(2).filter(|w| w[0] == w[1]).count();
        assert!(duplicates > 1_000, "duplicate event times: {duplicates}");
        for (i, &t) in times.values().iter().enumerate() {
            let lag = opts().base_time_nanos(i as u64) - t;
            assert!((0..=2_000_000_000).contains(&lag), "row {i} lag {lag}");
        }
    }
}
