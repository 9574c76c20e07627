//! `STORED AS KAFKA`: a Kafka topic as a streaming source and as a sink (through `rdkafka`).
//!
//! As a sink ([`KafkaSink`]) every row is a JSON message keyed by the `merge_key` columns,
//! with `volley.pipeline` and `volley.epoch` headers, sent by an idempotent producer; with
//! `exactly_once` each epoch is one transaction that also records the epoch, and epochs
//! already committed are not sent again after a restart.
//!
//! ```sql
//! CREATE EXTERNAL TABLE ride_requests (
//!   request_id BIGINT NOT NULL, rider_id BIGINT NOT NULL, lat DOUBLE NOT NULL, lon DOUBLE NOT NULL,
//!   event_time TIMESTAMP NOT NULL, _partition INT, _offset BIGINT
//! ) STORED AS KAFKA LOCATION 'localhost:9092/ride_requests'
//! OPTIONS ('format' 'json', 'watermark' 'event_time - INTERVAL ''5 seconds''');
//! ```
//!
//! - Partitions are *assigned* by Volley, and read positions (partition → next offset) live in
//!   Volley's checkpoints and epoch log, not in the consumer group: a replayed epoch reads
//!   exactly the offsets it read the first time.
//! - `format` 'json' decodes one object per message, a whole poll at a time (arrow-json);
//!   'raw' gives the value as the column `value`. Columns named `_key`, `_partition`,
//!   `_offset` and `_timestamp` are filled from the message's metadata, so the Kafka
//!   timestamp can be the event time (`'watermark' '_timestamp - INTERVAL ''1 second'''`).
//! - A message that cannot be decoded (bad JSON, wrong type, missing NOT NULL field, a
//!   tombstone, non-UTF-8 text) goes to the dead letters with its partition, offset, key,
//!   payload and error; the partition keeps flowing.
//!
//! | option       | meaning                                                              |
//! |--------------|----------------------------------------------------------------------|
//! | `format`     | `json` (default), `csv` (one record per message) or `raw`           |
//! | `start`      | `earliest` (default) or `latest`, when no checkpoint exists          |
//! | `bounded`    | `latest`: stop once every partition has been read to its end         |
//! | `partitions` | the partitions to read (default: all)                                |
//! | `group`      | scale-out: processes of this pipeline share the partitions through   |
//! |              | this consumer group (see `docs/scale-out.md`)                        |
//! | `partitioned_by` | the column producers keyed messages by                           |
//! | `session_timeout` | group mode: how long a silent member keeps its partitions (`10s`) |

mod dead_letter;
mod group;
mod layout;
mod options;
mod sink;
mod source;
mod txn;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use volley_sql::{OptionSpec, TableDecl};

pub use dead_letter::{KafkaLetters, SCHEME as DEAD_LETTER_SCHEME};
pub use group::{GroupCommitter, GroupEvent, GroupMember};
pub use layout::{KEY, Layout, Message, OFFSET, PARTITION, TIMESTAMP, VALUE};
pub use options::{KAFKA_OPTIONS, KafkaFormat, KafkaOptions, StartAt};
pub use sink::{EPOCH_HEADER, KafkaSink, PIPELINE_HEADER};
pub use source::KafkaSource;

use crate::error::{ConnectorError, Result};
use crate::traits::{Connector, Sink, SinkContext, Source};

/// The `KAFKA` kind: a streaming source and a sink.
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaConnector;

#[async_trait]
impl Connector for KafkaConnector {
    /// With a `merge_key`, messages are keyed by it: a compacted topic keeps the latest per key.
    fn accepts_updates(&self, table: &TableDecl) -> bool {
        table.merge_key().is_some_and(|k| !k.is_empty())
    }

    fn kind(&self) -> &'static str {
        "KAFKA"
    }

    fn options(&self) -> &'static [OptionSpec] {
        KAFKA_OPTIONS
    }

    async fn open_source(&self, table: &TableDecl, schema: SchemaRef) -> Result<Box<dyn Source>> {
        if table.declared_schema.is_none() {
            return Err(ConnectorError::config(
                &table.name,
                "a Kafka table needs its columns declared: CREATE EXTERNAL TABLE name (col TYPE, …) STORED AS KAFKA …",
            ));
        }
        let opts = KafkaOptions::from_table(table)?;
        Ok(Box::new(
            KafkaSource::open(&table.name, opts, schema).await?,
        ))
    }

    async fn open_sink(
        &self,
        table: &TableDecl,
        schema: SchemaRef,
        context: &SinkContext,
    ) -> Result<Box<dyn Sink>> {
        Ok(Box::new(KafkaSink::open(table, &schema, context).await?))
    }
}

#[cfg(test)]
mod tests;
