//! A Kafka topic as the dead-letter destination (`'dead_letter' 'kafka://host:port/topic'`).
//!
//! Each letter (one JSON line, as in dead-letter files) is one message keyed
//! `<source>[/<share>]/<epoch>/<n>` (`n` counts the epoch's letters), with a `volley.epoch`
//! header. A replayed epoch writes the same
//! letters in the same order under the same keys, so a compacted dead-letter topic keeps each
//! once and consumers can drop repeats by key (delivery to the topic is at-least-once).

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::sink::EPOCH_HEADER;
use crate::error::{ConnectorError, Result};

/// The URL scheme that names a Kafka dead-letter destination.
pub const SCHEME: &str = "kafka://";

/// Sends dead letters to one topic.
pub struct KafkaLetters {
    producer: FutureProducer,
    topic: String,
    display: String,
}

impl std::fmt::Debug for KafkaLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLetters")
            .field("topic", &self.display)
            .finish_non_exhaustive()
    }
}

impl KafkaLetters {
    /// A producer for `kafka://host:port[,host:port…]/topic`.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] for a URL without brokers or topic; `External` when the
    /// producer cannot be created.
    pub fn open(url: &str) -> Result<Self> {
        let rest = url.strip_prefix(SCHEME).unwrap_or(url);
        let (brokers, topic) = rest
            .rsplit_once('/')
            .filter(|(b, t)| !b.is_empty() && !t.is_empty())
            .ok_or_else(|| {
                ConnectorError::config(
                    "dead_letter",
                    format!("option 'dead_letter' is '{url}'; a Kafka destination is 'kafka://host:port/topic'"),
                )
            })?;
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "120000")
            .create()
            .map_err(|e| {
                ConnectorError::external(
                    "dead_letter",
                    format!("cannot create a Kafka producer for '{url}': {e}"),
                )
            })?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            display: url.to_string(),
        })
    }

    /// Sends `(key, letter)` messages for `epoch` and waits until the broker has them all.
    ///
    /// # Errors
    /// [`ConnectorError::External`] (retryable) when a message is not delivered.
    pub async fn send(&self, epoch: u64, letters: &[(String, Vec<u8>)]) -> Result<()> {
        let epoch_text = epoch.to_string();
        let mut deliveries = Vec::with_capacity(letters.len());
        for (key, line) in letters {
            let headers = OwnedHeaders::new().insert(Header {
                key: EPOCH_HEADER,
                value: Some(epoch_text.as_str()),
            });
            let record = FutureRecord::to(&self.topic)
                .key(key)
                .payload(line)
                .headers(headers);
            deliveries.push(self.producer.send(record, Duration::from_secs(120)));
        }
        for delivery in futures::future::join_all(deliveries).await {
            delivery.map_err(|(e, _)| ConnectorError::External {
                table: "dead_letter".into(),
                message: format!("cannot send a dead letter to '{}': {e}", self.display),
                retryable: true,
            })?;
        }
        Ok(())
    }
}
