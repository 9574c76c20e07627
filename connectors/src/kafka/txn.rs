//! `exactly_once` for the Kafka sink: one Kafka transaction per epoch that also commits the
//! epoch as a consumer-group offset, so "epoch N is in the topic" and "the progress says N"
//! become visible together or not at all.
//!
//! ```text
//!  begin ─ produce epoch N's rows ─ send_offsets(progress group: topic[0] = N) ─ commit
//! ```
//!
//! The progress group is `volley-progress.<pipeline>.<table>`; its committed offset on the
//! topic's partition 0 is the last epoch committed. On restart, epochs at or below it are
//! recomputed but not sent again (the engine asks [`Progress::committed`] through the sink).
//! The `transactional.id` is `volley.<pipeline>.<table>`: a second instance calling
//! `init_transactions` fences the first, so a zombie cannot commit. Progress lives in group
//! offsets rather than in a progress-topic record because a transactional offset commit is
//! applied only on commit, by every broker, whereas a record of an aborted transaction can be
//! shown to readers by brokers that do not report aborted transactions.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{ConnectorError, Result};
use crate::traits::SinkContext;

/// How long one transactional call may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// The transactional state of one exactly-once sink.
pub struct Progress {
    table: String,
    topic: String,
    consumer: Arc<BaseConsumer>,
    group: Arc<ConsumerGroupMetadata>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("table", &self.table)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

fn failed(table: &str, doing: &str, e: &dyn std::fmt::Display, retryable: bool) -> ConnectorError {
    ConnectorError::External {
        table: table.to_string(),
        message: format!("Kafka: cannot {doing}: {e}"),
        retryable,
    }
}

/// The transactional id and progress group of a sink.
pub fn ids(context: &SinkContext, table: &str) -> (String, String) {
    let pipeline_id = &context.pipeline_id;
    (
        context.scoped(&format!("volley.{pipeline_id}.{table}"), "."),
        context.scoped(&format!("volley-progress.{pipeline_id}.{table}"), "."),
    )
}

/// Runs a blocking librdkafka call off the async threads.
async fn blocking<T: Send + 'static>(
    table: &str,
    doing: &str,
    call: impl FnOnce() -> rdkafka::error::KafkaResult<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| {
            ConnectorError::Internal(format!("table '{table}': {doing} task failed: {e}"))
        })?
        .map_err(|e| {
            let fatal = matches!(&e, rdkafka::error::KafkaError::Transaction(t) if t.is_fatal());
            failed(table, doing, &e, !fatal)
        })
}

impl Progress {
    /// Registers the producer's transactional id (fencing any earlier instance) and opens the
    /// progress group.
    ///
    /// # Errors
    /// [`ConnectorError::External`] when the broker refuses or cannot be reached.
    pub async fn open(
        table: &str,
        brokers: &str,
        topic: &str,
        group_id: &str,
        producer: &FutureProducer,
    ) -> Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| failed(table, "create the progress consumer", &e, false))?;
        let group = consumer.group_metadata().ok_or_else(|| {
            ConnectorError::Internal(format!("table '{table}': no consumer group metadata"))
        })?;
        let init = producer.clone();
        blocking(
            table,
            "initialise transactions (fencing earlier instances)",
            move || init.init_transactions(TXN_TIMEOUT),
        )
        .await?;
        Ok(Self {
            table: table.to_string(),
            topic: topic.to_string(),
            consumer: Arc::new(consumer),
            group: Arc::new(group),
        })
    }

    /// The last epoch committed to the topic, from the progress group's offset.
    ///
    /// # Errors
    /// [`ConnectorError::External`] when the offsets cannot be read.
    pub async fn committed(&self) -> Result<Option<u64>> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let offsets = blocking(&self.table, "read the committed epoch", move || {
            let mut list = TopicPartitionList::new();
            list.add_partition(&topic, 0);
            consumer.committed_offsets(list, TXN_TIMEOUT)
        })
        .await?;
        Ok(offsets.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(n) => u64::try_from(n).ok(),
            _ => None,
        }))
    }

    /// Begins epoch `epoch`'s transaction.
    ///
    /// # Errors
    /// [`ConnectorError::External`].
    pub fn begin(&self, producer: &FutureProducer) -> Result<()> {
        producer
            .begin_transaction()
            .map_err(|e| failed(&self.table, "begin a transaction", &e, true))
    }

    /// Adds the progress record for `epoch` to the open transaction and commits it.
    ///
    /// # Errors
    /// [`ConnectorError::External`]; the transaction is aborted first when it can be.
    pub async fn commit(&self, producer: &FutureProducer, epoch: u64) -> Result<()> {
        let offset = i64::try_from(epoch).map_err(|_| {
            ConnectorError::Internal(format!(
                "table '{}': epoch {epoch} out of range",
                self.table
            ))
        })?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, 0, Offset::Offset(offset))
            .map_err(|e| failed(&self.table, "record the epoch", &e, false))?;
        let group = Arc::clone(&self.group);
        let txn = producer.clone();
        let done = blocking(&self.table, "commit the epoch's transaction", move || {
            txn.send_offsets_to_transaction(&list, group.as_ref(), TXN_TIMEOUT)?;
            txn.commit_transaction(TXN_TIMEOUT)
        })
        .await;
        if done.is_err() {
            self.abort(producer).await;
        }
        done
    }

    /// Aborts the open transaction, if any (errors are logged: the restart aborts it anyway).
    pub async fn abort(&self, producer: &FutureProducer) {
        let txn = producer.clone();
        if let Err(e) = blocking(&self.table, "abort a transaction", move || {
            txn.abort_transaction(TXN_TIMEOUT)
        })
        .await
        {
            tracing::warn!(table = %self.table, error = %e, "could not abort the Kafka transaction");
        }
    }
}
