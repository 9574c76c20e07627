//! The `rides` stream: ride requests with hot-city skew, a pure function of `(seed, row)`.
//!
//! Every pseudo-random choice for row `i` comes from a counter-based hash of `(seed, i)`, so any
//! range of rows can be regenerated exactly (replay), and output never depends on how rows are
//! cut into batches.

use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Float64Array, Int64Array, StructArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::options::{BaseTimes, GeneratorOptions};

/// Share of events in the 5 hottest cities, cumulatively (30%, 20%, 12%, 10%, 8%).
const HOT_CUMULATIVE: [f64; 5] = [0.30, 0.50, 0.62, 0.72, 0.80];

/// Centres of the first cities, hottest first; further cities are placed by a hash.
const KNOWN_CITIES: [(f64, f64); 20] = [
    (37.7749, -122.4194), // San Francisco
    (40.7128, -74.0060),  // New York
    (51.5074, -0.1278),   // London
    (48.8566, 2.3522),    // Paris
    (35.6762, 139.6503),  // Tokyo
    (34.0522, -118.2437), // Los Angeles
    (41.8781, -87.6298),  // Chicago
    (47.6062, -122.3321), // Seattle
    (52.5200, 13.4050),   // Berlin
    (40.4168, -3.7038),   // Madrid
    (-33.8688, 151.2093), // Sydney
    (1.3521, 103.8198),   // Singapore
    (19.4326, -99.1332),  // Mexico City
    (-23.5505, -46.6333), // São Paulo
    (43.6532, -79.3832),  // Toronto
    (25.2048, 55.2708),   // Dubai
    (28.6139, 77.2090),   // Delhi
    (37.5665, 126.9780),  // Seoul
    (41.9028, 12.4964),   // Rome
    (30.2672, -97.7431),  // Austin
];

/// Points are jittered up to this many degrees around a city centre (~5 km).
const JITTER_DEGREES: f64 = 0.05;

/// The schema of the `rides` stream.
pub fn rides_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("request_id", DataType::Int64, false),
            Field::new("rider_id", DataType::Int64, false),
            Field::new("lat", DataType::Float64, false),
            Field::new("lon", DataType::Float64, false),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
        ]))
    }))
}

/// Rows `[start, end)` of the `rides` stream described by `opts`, as one batch with
/// [`rides_schema`]. `count` is not applied here: callers choose the range.
///
/// ```
/// use volley_connectors::generator::{generate_rides, GeneratorOptions};
///
/// let opts = GeneratorOptions::default();
/// let all = generate_rides(&opts, 0, 10);
/// assert_eq!(all.slice(4, 3), generate_rides(&opts, 4, 7));
/// ```
pub fn generate_rides(opts: &GeneratorOptions, start: u64, end: u64) -> RecordBatch {
    let len = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
    let mut request_id = Vec::with_capacity(len);
    let mut rider_id = Vec::with_capacity(len);
    let mut lat = Vec::with_capacity(len);
    let mut lon = Vec::with_capacity(len);
    let mut event_time = Vec::with_capacity(len);

    let riders = opts.riders.max(1);
    let cities = opts.cities.max(1);
    let disorder = u64::try_from(opts.disorder.as_nanos())
        .unwrap_or(u64::MAX)
        .min(i64::MAX as u64);
    let mut base_times = BaseTimes::from_row(opts, start);
    for i in start..end {
        let h0 = row_hash(opts.seed, i);
        let h1 = splitmix64(h0);
        let h2 = splitmix64(h1);
        let h3 = splitmix64(h2);
        let h4 = splitmix64(h3);
        let h5 = splitmix64(h4);

        let (centre_lat, centre_lon) = city_centre(pick_city(unit(h0), h1, cities));
        let u = unit(h2);
        let rider = ((u * u * riders as f64) as u64).min(riders - 1) + 1;
        let lag = if disorder == 0 {
            0
        } else {
            h5 % (disorder + 1)
        };

        request_id.push(i as i64);
        rider_id.push(rider as i64);
        lat.push(centre_lat + (2.0 * unit(h3) - 1.0) * JITTER_DEGREES);
        lon.push(centre_lon + (2.0 * unit(h4) - 1.0) * JITTER_DEGREES);
        event_time.push(base_times.advance().saturating_sub(lag as i64));
    }

    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(request_id)),
        Arc::new(Int64Array::from(rider_id)),
        Arc::new(Float64Array::from(lat)),
        Arc::new(Float64Array::from(lon)),
        Arc::new(TimestampNanosecondArray::from(event_time)),
    ];
    // Infallible by construction (equal lengths, no nulls), unlike `RecordBatch::try_new`.
    RecordBatch::from(StructArray::new(
        rides_schema().fields().clone(),
        columns,
        None,
    ))
}

/// Chooses a city: ~80% of draws land in the 5 hottest, the rest spread evenly.
fn pick_city(u: f64, h: u64, cities: u64) -> u64 {
    if cities <= HOT_CUMULATIVE.len() as u64 {
        return h % cities;
    }
    match HOT_CUMULATIVE.iter().position(|&edge| u < edge) {
        Some(hot) => hot as u64,
        None => HOT_CUMULATIVE.len() as u64 + h % (cities - HOT_CUMULATIVE.len() as u64),
    }
}

/// Centre of city `k`: a real city for the first few, then a fixed hashed point on land-ish
/// latitudes. Does not depend on the seed, so cities are the same in every stream.
fn city_centre(k: u64) -> (f64, f64) {
    match usize::try_from(k).ok().and_then(|k| KNOWN_CITIES.get(k)) {
        Some(&centre) => centre,
        None => {
            let h = splitmix64(k ^ 0xC1_7E5);
            (
                -45.0 + 105.0 * unit(h),
                -180.0 + 360.0 * unit(splitmix64(h)),
            )
        }
    }
}

/// The base hash of row `i`: a counter-based generator, no state between rows.
pub(super) fn row_hash(seed: u64, i: u64) -> u64 {
    splitmix64(seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// SplitMix64's output function: a strong 64-bit mix.
pub(super) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform float in `[0, 1)` from the top 53 bits of `h`.
pub(super) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use arrow::array::AsArray;
    use arrow::compute::concat_batches;
    use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType};

    use super::*;

    #[test]
    fn a_range_regenerates_exactly() {
        let opts = GeneratorOptions::default();
        let all = generate_rides(&opts, 0, 1000);
        assert_eq!(generate_rides(&opts, 100, 200), all.slice(100, 100));
    }

    #[test]
    fn batch_cuts_do_not_change_output() {
        let opts = GeneratorOptions {
            disorder: Duration::from_secs(3),
            ..GeneratorOptions::default()
        };
        let whole = generate_rides(&opts, 0, 1000);
        for cut in [1usize, 7, 64, 999] {
            let parts: Vec<_> = (0..1000u64)
                .step_by(cut)
                .map(|s| generate_rides(&opts, s, (s + cut as u64).min(1000)))
                .collect();
            assert_eq!(
                concat_batches(&rides_schema(), &parts).unwrap(),
                whole,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn seeds_change_output() {
        let a = generate_rides(&GeneratorOptions::default(), 0, 100);
        let b = generate_rides(
            &GeneratorOptions {
                seed: 43,
                ..GeneratorOptions::default()
            },
            0,
            100,
        );
        assert_ne!(a, b);
    }

    #[test]
    fn five_hot_cities_get_most_events() {
        let batch = generate_rides(&GeneratorOptions::default(), 0, 20_000);
        let lat = batch.column(2).as_primitive::<Float64Type>();
        let lon = batch.column(3).as_primitive::<Float64Type>();
        let mut per_city: HashMap<u64, usize> = HashMap::new();
        for (&la, &lo) in lat.values().iter().zip(lon.values()) {
            let near = (0..50u64).find(|&k| {
                let (c_lat, c_lon) = city_centre(k);
                (la - c_lat).abs() <= JITTER_DEGREES && (lo - c_lon).abs() <= JITTER_DEGREES
            });
            *per_city
                .entry(near.expect("every point lies near a city centre"))
                .or_default() += 1;
        }
        let mut counts: Vec<usize> = per_city.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top5: usize = counts.iter().take(5).sum();
        let share = top5 as f64 / 20_000.0;
        assert!((0.70..=0.90).contains(&share), "top-5 share {share}");
        assert!(counts.len() > 30, "only {} distinct cities", counts.len());
    }

    #[test]
    fn riders_are_skewed_and_in_range() {
        let opts = GeneratorOptions {
            riders: 1000,
            ..GeneratorOptions::default()
        };
        let batch = generate_rides(&opts, 0, 10_000);
        let riders = batch.column(1).as_primitive::<Int64Type>();
        assert!(riders.values().iter().all(|r| (1..=1000).contains(r)));
        let low = riders.values().iter().filter(|&&r| r <= 250).count();
        assert!(
            low > 4_000,
            "squared-uniform skew puts ~half the events on the lowest quarter: {low}"
        );
    }

    #[test]
    fn disorder_stays_within_bound() {
        let opts = GeneratorOptions {
            disorder: Duration::from_millis(2500),
            ..GeneratorOptions::default()
        };
        let batch = generate_rides(&opts, 0, 5000);
        let times = batch.column(4).as_primitive::<TimestampNanosecondType>();
        let mut lagged = 0;
        for (i, &t) in times.values().iter().enumerate() {
            let lag = opts.base_time_nanos(i as u64) - t;
            assert!((0..=2_500_000_000).contains(&lag), "row {i} lag {lag}");
            lagged += usize::from(lag > 0);
        }
        assert!(lagged > 4000, "disorder should move most events");
        let ordered = generate_rides(&GeneratorOptions::default(), 0, 10);
        let times = ordered.column(4).as_primitive::<TimestampNanosecondType>();
        assert_eq!(
            times.value(3) - times.value(2),
            1_000_000,
            "1000 events per second"
        );
    }
}
