//! Flight SQL under load: the surge pipeline runs at its max rate, serving its live table
//! `demand_1m` (latest row per geohash6 and minute) over Flight SQL, while 8 clients query it
//! over TCP with arrow-flight's client:
//!
//! - paced: each client issues a point lookup or a geohash4 roll-up every 100 ms; reports
//!   query latency (p50, p99) and the pipeline's throughput with and without that load;
//! - flat out: the same clients as fast as they can; reports queries per second.
//!
//! The clients run on low-priority threads of their own, as the server does: they stand in
//! for clients on other machines, whose decoding would not take the pipeline's CPU.
//!
//! `cargo bench -p volley-benches --bench flight` (`VOLLEY_BENCH_ROWS` sets the pipeline's
//! row count, default 12,000,000).
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};
use volley_connectors::ConnectorRegistry;
use volley_engine::setup::{JobOverrides, build_stream_job};
use volley_flight::QueryRuntime;
use volley_flight::server::{self, FlightArgs};
use volley_sql::Pipeline;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENTS: usize = 8;
const ROUNDS: usize = 5;

const PIPELINE: &str = "
CREATE EXTERNAL TABLE ride_requests STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '10000', 'seed' '42', 'disorder' '3 seconds',
         'watermark' 'event_time - INTERVAL ''5 seconds''', 'max_rows' '65536');
CREATE EXTERNAL TABLE demand_1m STORED AS BLACKHOLE LOCATION 'x'
OPTIONS ('merge_key' 'geohash6, window_start');
INSERT INTO demand_1m
SELECT geohash(lat, lon, 6) AS geohash6, date_bin(INTERVAL '1 minute', event_time) AS window_start,
       count(*) AS requests, count(DISTINCT rider_id) AS riders
FROM ride_requests GROUP BY 1, 2;";

const ROLL_UP: &str = "SELECT substr(geohash6, 1, 4) AS geohash4, sum(requests) AS requests \
                       FROM demand_1m GROUP BY 1 ORDER BY 2 DESC LIMIT 10";

#[derive(Clone, Copy, PartialEq)]
enum Load {
    None,
    Every(Duration),
    FlatOut,
}

struct Outcome {
    seconds: f64,
    rows: u64,
    latencies_us: Vec<u64>,
}

async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> usize {
    let info = client.execute(sql.to_string(), None).await.unwrap();
    let mut rows = 0;
    for endpoint in info.endpoint {
        let batches: Vec<_> = client
            .do_get(endpoint.ticket.unwrap())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    rows
}

/// One client: waits for cells to look up, then alternates point lookups and roll-ups.
async fn client(addr: String, load: Load, stop: Arc<AtomicBool>) -> Vec<u64> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    let mut cells = Vec::new();
    while cells.is_empty() && !stop.load(Ordering::Relaxed) {
        let info = client
            .execute(
                "SELECT DISTINCT geohash6 FROM demand_1m LIMIT 64".into(),
                None,
            )
            .await
            .unwrap();
        for endpoint in info.endpoint {
            let batches: Vec<_> = client
                .do_get(endpoint.ticket.unwrap())
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            for b in batches {
                let column =
                    arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
                cells.extend(
                    column
                        .as_string::<i32>()
                        .iter()
                        .flatten()
                        .map(str::to_string),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut latencies = Vec::new();
    let mut tick = match load {
        Load::Every(period) => {
            let mut t = tokio::time::interval(period);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Some(t)
        }
        _ => None,
    };
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        if let Some(t) = &mut tick {
            t.tick().await;
        }
        let sql = if i.is_multiple_of(2) {
            format!(
                "SELECT * FROM demand_1m WHERE geohash6 = '{}'",
                cells[(i / 2) % cells.len()]
            )
        } else {
            ROLL_UP.to_string()
        };
        let started = Instant::now();
        query(&mut client, &sql).await;
        latencies.push(u64::try_from(started.elapsed().as_micros()).unwrap());
        i += 1;
    }
    latencies
}

async fn run(rows: u64, load: Load, clients_on: &tokio::runtime::Handle) -> Outcome {
    let sql = PIPELINE.replace("{count}", &rows.to_string());
    let registry = ConnectorRegistry::builtin();
    let pipeline = Pipeline::parse(&sql, &registry).await.unwrap();
    let overrides = JobOverrides {
        live: true,
        ..JobOverrides::default()
    };
    let (job, _) = build_stream_job(&pipeline, &registry, overrides)
        .await
        .unwrap();
    let live = job.live().unwrap();
    let args = FlightArgs {
        flight: "127.0.0.1:0".into(),
        ..FlightArgs::default()
    };
    let names: Vec<String> = live.names().map(str::to_string).collect();
    let server = server::start(&args, live.published(), &names, None, true)
        .await
        .unwrap();
    let addr = server.addr.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = if load == Load::None {
        Vec::new()
    } else {
        (0..CLIENTS)
            .map(|_| clients_on.spawn(client(addr.clone(), load, Arc::clone(&stop))))
            .collect()
    };
    let started = Instant::now();
    let summary = job.run().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    for c in clients {
        latencies_us.extend(c.await.unwrap());
    }
    server.stop().await;
    Outcome {
        seconds,
        rows: summary.rows_in,
        latencies_us,
    }
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}

fn main() {
    let rows: u64 = std::env::var("VOLLEY_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12_000_000);
    // `cargo bench` passes `--bench`; nothing to parse beyond it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client_threads = QueryRuntime::new().unwrap();
    let clients = client_threads.handle();
    runtime.block_on(async {
        // Warm up (allocator, page cache), unreported.
        run(rows, Load::None, clients).await;
        let scenarios = [
            ("no queries", Load::None),
            ("8 clients every 100 ms", Load::Every(Duration::from_millis(100))),
            ("8 clients flat out", Load::FlatOut),
        ];
        // Rounds alternate the scenarios, so drift hits each alike; medians are reported.
        let mut outcomes: Vec<Vec<Outcome>> = scenarios.iter().map(|_| Vec::new()).collect();
        for _ in 0..ROUNDS {
            for (i, (_, load)) in scenarios.iter().enumerate() {
                outcomes[i].push(run(rows, *load, clients).await);
            }
        }
        let mut rates = Vec::new();
        for ((name, _), runs) in scenarios.iter().zip(&outcomes) {
            let mut by_rate: Vec<&Outcome> = runs.iter().collect();
            by_rate.sort_by(|a, b| {
                (a.rows as f64 / a.seconds).total_cmp(&(b.rows as f64 / b.seconds))
            });
            let median = by_rate[by_rate.len() / 2];
            let mut sorted: Vec<u64> = runs.iter().flat_map(|o| o.latencies_us.clone()).collect();
            sorted.sort_unstable();
            let seconds: f64 = runs.iter().map(|o| o.seconds).sum();
            let rate = median.rows as f64 / median.seconds;
            println!(
                "{name:<24} pipeline {:>9.0} rows/s (median of {ROUNDS}, {} rows each) | {} queries, {:.0}/s, p50 {:.1} ms, p99 {:.1} ms",
                rate,
                median.rows,
                sorted.len(),
                sorted.len() as f64 / seconds,
                percentile(&sorted, 0.5) as f64 / 1e3,
                percentile(&sorted, 0.99) as f64 / 1e3,
            );
            rates.push((*name, rate));
        }
        let base = rates[0].1;
        for (name, rate) in &rates[1..] {
            println!(
                "{name}: the pipeline keeps {:.0}% of its rate without queries",
                rate / base * 100.0
            );
        }
    });
}
