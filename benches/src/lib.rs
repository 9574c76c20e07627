//! Workloads shared by the benches: the surge query and the generator's ride events, made
//! once outside the timed loops.
#![allow(clippy::unwrap_used)]

use arrow::record_batch::RecordBatch;
use tokio::runtime::Runtime;
use volley_connectors::ConnectorRegistry;
use volley_connectors::generator::{GeneratorConnector, generate_rides};
use volley_sql::Pipeline;

/// The surge query (requests and distinct riders per geohash6 per minute) over `{count}`
/// generated ride requests, into a blackhole.
pub const SURGE: &str = "
CREATE EXTERNAL TABLE ride_requests STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '10000', 'seed' '42', 'disorder' '3 seconds',
         'watermark' 'event_time - INTERVAL ''5 seconds''');
CREATE EXTERNAL TABLE demand_1m STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO demand_1m
SELECT geohash(lat, lon, 6) AS geohash6, date_bin(INTERVAL '1 minute', event_time) AS window_start,
       count(*) AS requests, count(DISTINCT rider_id) AS riders
FROM ride_requests GROUP BY 1, 2;";

/// The SELECT of [`SURGE`], for DataFusion batch runs.
pub const SURGE_SELECT: &str = "SELECT geohash(lat, lon, 6) AS geohash6, date_bin(INTERVAL '1 minute', event_time) AS window_start, count(*) AS requests, count(DISTINCT rider_id) AS riders FROM ride_requests GROUP BY 1, 2";

/// Parses `sql` (with `{count}` replaced) and generates its first table's `count` ride events
/// in batches of 65,536.
///
/// # Panics
/// On a pipeline that does not parse or whose first table is not a rides generator.
pub fn events(sql: &str, count: u64) -> (Pipeline, Vec<RecordBatch>) {
    let rt = Runtime::new().unwrap();
    let sql = sql.replace("{count}", &count.to_string());
    let pipeline = rt
        .block_on(Pipeline::parse(&sql, &ConnectorRegistry::builtin()))
        .unwrap();
    let opts = GeneratorConnector::options(&pipeline.tables[0]).unwrap();
    let batches = (0..count)
        .step_by(65_536)
        .map(|start| generate_rides(&opts, start, (start + 65_536).min(count)))
        .collect();
    (pipeline, batches)
}
