//! [`KafkaSource`]: a topic's partitions read by assignment (Volley, not the group, decides
//! the partitions and offsets), decoded per poll into one Arrow batch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::time::Instant;

use super::layout::{Layout, Message};
use super::options::{KafkaOptions, StartAt};
use crate::error::{ConnectorError, Result};
use crate::traits::{Position, RejectedRecord, Source, SourceMonitor, SourcePoll};

/// The source consumer's client context: end-of-partition is how a bounded read knows it is
/// done, not an error worth a log line; other client errors are logged as warnings (librdkafka
/// reconnects by itself, and `poll_batch` backs off). Statistics give each partition's high
/// watermark, for the consumer lag metric.
pub(crate) struct SourceContext {
    table: String,
    topic: String,
    high_watermarks: std::sync::Mutex<BTreeMap<i32, i64>>,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if is_end_of_partition(&error) {
            tracing::trace!(table = %self.table, reason, "end of partition");
        } else {
            tracing::warn!(table = %self.table, %error, reason, "Kafka client error");
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let mut high = self
            .high_watermarks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (partition, stats) in &topic.partitions {
            if *partition >= 0 && stats.hi_offset >= 0 {
                high.insert(*partition, stats.hi_offset);
            }
        }
    }
}

/// Whether `error` only says a partition has been read to its end. librdkafka reports it to
/// the client context as a global error (`KafkaError::Global(PartitionEOF)`), not only as
/// `KafkaError::PartitionEOF` from a poll.
pub(crate) fn is_end_of_partition(error: &KafkaError) -> bool {
    matches!(error, KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
}

/// [`SourceMonitor`] of a [`KafkaSource`]: commits checkpointed offsets to the table's consumer
/// group (single-process mode; in group mode the group member commits) and reports lag from
/// the consumer's statistics.
#[derive(Clone)]
struct KafkaMonitor {
    consumer: Arc<StreamConsumer<SourceContext>>,
    commit: bool,
}

impl std::fmt::Debug for KafkaMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaMonitor")
            .field("table", &self.consumer.context().table)
            .finish_non_exhaustive()
    }
}

impl SourceMonitor for KafkaMonitor {
    fn checkpointed(&self, position: &Position) {
        if !self.commit {
            return;
        }
        let context = self.consumer.context();
        let Ok(offsets) = to_offsets(&context.table, position) else {
            return;
        };
        let mut list = TopicPartitionList::new();
        for (partition, offset) in offsets {
            if list
                .add_partition_offset(&context.topic, partition, Offset::Offset(offset))
                .is_err()
            {
                return;
            }
        }
        if list.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::debug!(table = %context.table, error = %e, "offset commit for monitoring refused");
        }
    }

    fn lag(&self, position: &Position) -> Option<BTreeMap<String, u64>> {
        let context = self.consumer.context();
        // The high watermarks of the client's last statistics (every second).
        let high = context
            .high_watermarks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if high.is_empty() {
            return None;
        }
        let at = to_offsets(&context.table, position).ok()?;
        Some(
            high.iter()
                .map(|(p, hi)| {
                    let next = at.get(p).copied().unwrap_or(0);
                    (p.to_string(), u64::try_from(hi - next).unwrap_or(0))
                })
                .collect(),
        )
    }
}

impl ConsumerContext for SourceContext {}

/// Reads one topic. Positions are per partition (`"<partition>" → next offset`); a partition
/// with no recorded position starts at the `start` option's end of the log.
///
/// # Cancellation
/// A message counts as read only once `poll_batch` returns it, and positions advance then;
/// a dropped poll loses nothing because a later `seek`/poll re-assigns at the positions.
pub struct KafkaSource {
    table: String,
    opts: KafkaOptions,
    layout: Layout,
    consumer: Arc<StreamConsumer<SourceContext>>,
    partitions: Vec<i32>,
    /// Next offset to read per partition (absent: not read yet; the `start` option applies).
    positions: BTreeMap<i32, i64>,
    /// Partitions that reported end-of-partition with nothing read since.
    at_end: BTreeSet<i32>,
    rejected: Vec<RejectedRecord>,
    /// The consumer's fetch positions no longer match `positions` (after a seek or a bounded
    /// replay read): re-assign before the next read.
    reassign: bool,
    /// Consumer errors since the last message (sets the retry backoff).
    errors_in_row: u32,
    /// Bytes of the keys and payloads read.
    bytes_read: u64,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("table", &self.table)
            .field("topic", &self.opts.topic)
            .field("partitions", &self.partitions)
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

fn broker_error(table: &str, doing: &str, e: &KafkaError) -> ConnectorError {
    ConnectorError::External {
        table: table.to_string(),
        message: format!("Kafka: cannot {doing}: {e}"),
        retryable: true,
    }
}

impl KafkaSource {
    /// Connects, finds the topic's partitions and assigns them at the `start` option's end.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] for a schema the format cannot fill or partitions the topic
    /// lacks; [`ConnectorError::External`] when the broker cannot be reached.
    pub async fn open(table: &str, opts: KafkaOptions, schema: SchemaRef) -> Result<Self> {
        let layout = Layout::new(table, schema, opts.format, opts.timestamp_unit)?;
        let consumer: StreamConsumer<SourceContext> = ClientConfig::new()
            .set("bootstrap.servers", &opts.brokers)
            .set("group.id", &opts.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("statistics.interval.ms", "1000")
            .set("fetch.wait.max.ms", opts.fetch_wait.as_millis().to_string())
            .set(
                "auto.offset.reset",
                match opts.start {
                    StartAt::Earliest | StartAt::Timestamp(_) => "earliest",
                    StartAt::Latest => "latest",
                },
            )
            .create_with_context(SourceContext {
                table: table.to_string(),
                topic: opts.topic.clone(),
                high_watermarks: std::sync::Mutex::default(),
            })
            .map_err(|e| broker_error(table, "create a consumer", &e))?;
        let consumer = Arc::new(consumer);
        let found = {
            let consumer = Arc::clone(&consumer);
            let topic = opts.topic.clone();
            let timeout = opts.request_timeout;
            tokio::task::spawn_blocking(move || {
                consumer.fetch_metadata(Some(&topic), timeout).map(|m| {
                    m.topics()
                        .iter()
                        .filter(|t| t.name() == topic)
                        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                        .collect::<Vec<i32>>()
                })
            })
            .await
            .map_err(|e| ConnectorError::Internal(format!("metadata task failed: {e}")))?
            .map_err(|e| {
                broker_error(
                    table,
                    &format!("read the metadata of topic '{}'", opts.topic),
                    &e,
                )
            })?
        };
        if found.is_empty() {
            return Err(ConnectorError::External {
                table: table.to_string(),
                message: format!(
                    "Kafka: topic '{}' has no partitions (does it exist?)",
                    opts.topic
                ),
                retryable: true,
            });
        }
        let partitions = match &opts.partitions {
            None => {
                let mut all = found;
                all.sort_unstable();
                all
            }
            Some(wanted) => {
                let missing: Vec<String> = wanted
                    .iter()
                    .filter(|p| !found.contains(p))
                    .map(ToString::to_string)
                    .collect();
                if !missing.is_empty() {
                    return Err(ConnectorError::config(
                        table,
                        format!(
                            "option 'partitions' names partition(s) {} that topic '{}' does not have",
                            missing.join(", "),
                            opts.topic
                        ),
                    ));
                }
                wanted.clone()
            }
        };
        let mut source = Self {
            table: table.to_string(),
            opts,
            layout,
            consumer,
            partitions,
            positions: BTreeMap::new(),
            at_end: BTreeSet::new(),
            rejected: Vec::new(),
            reassign: true,
            errors_in_row: 0,
            bytes_read: 0,
        };
        if let StartAt::Timestamp(ms) = source.opts.start {
            source.positions = source.offsets_at(ms).await?;
        }
        source.assign(None)?;
        Ok(source)
    }

    /// Each partition's first offset with a timestamp at or after `ms`; partitions with no such
    /// message are left out (they start at their end).
    async fn offsets_at(&self, ms: i64) -> Result<BTreeMap<i32, i64>> {
        let mut wanted = TopicPartitionList::new();
        for &p in &self.partitions {
            wanted
                .add_partition_offset(&self.opts.topic, p, Offset::Offset(ms))
                .map_err(|e| broker_error(&self.table, "look up offsets by time", &e))?;
        }
        let consumer = Arc::clone(&self.consumer);
        let timeout = self.opts.request_timeout;
        let found =
            tokio::task::spawn_blocking(move || consumer.offsets_for_times(wanted, timeout))
                .await
                .map_err(|e| ConnectorError::Internal(format!("offset lookup task failed: {e}")))?
                .map_err(|e| broker_error(&self.table, "look up offsets by time", &e))?;
        Ok(found
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(at) => Some((e.partition(), at)),
                _ => None,
            })
            .collect())
    }

    /// Assigns every partition (or those still below `until`) at its position.
    fn assign(&mut self, until: Option<&BTreeMap<i32, i64>>) -> Result<()> {
        let mut list = TopicPartitionList::new();
        for &p in &self.partitions {
            let position = self.positions.get(&p).copied();
            if let (Some(until), Some(at)) = (until, position)
                && until.get(&p).is_none_or(|end| at >= *end)
            {
                continue;
            }
            if until.is_some_and(|u| !u.contains_key(&p)) {
                continue;
            }
            let offset = match (position, self.opts.start) {
                (Some(at), _) => Offset::Offset(at),
                (None, StartAt::Earliest) => Offset::Beginning,
                (None, StartAt::Latest | StartAt::Timestamp(_)) => Offset::End,
            };
            list.add_partition_offset(&self.opts.topic, p, offset)
                .map_err(|e| broker_error(&self.table, "assign partitions", &e))?;
        }
        self.consumer
            .assign(&list)
            .map_err(|e| broker_error(&self.table, "assign partitions", &e))?;
        self.reassign = false;
        Ok(())
    }

    /// Reads up to `max_rows` messages until `deadline` (never past `until`, per partition),
    /// then decodes them, one batch per partition. Returns `None` when nothing was read.
    async fn read(
        &mut self,
        max_rows: usize,
        deadline: Instant,
        until: Option<&BTreeMap<i32, i64>>,
    ) -> Result<Option<SourcePoll>> {
        let mut messages: Vec<Message> = Vec::new();
        let mut passed_end = false;
        while messages.len() < max_rows {
            // Once something was read, take only what is already buffered: latency over size.
            let wait_until = if messages.is_empty() {
                deadline
            } else {
                Instant::now()
            };
            let next = match tokio::time::timeout_at(wait_until, self.consumer.recv()).await {
                Err(_) => break,
                Ok(next) => next,
            };
            match next {
                Ok(m) => {
                    let (p, offset) = (m.partition(), m.offset());
                    if until.is_some_and(|u| u.get(&p).is_none_or(|end| offset >= *end)) {
                        passed_end = true;
                        continue;
                    }
                    if self.errors_in_row > 0 {
                        tracing::info!(table = %self.table, "Kafka consumer reading again");
                        self.errors_in_row = 0;
                    }
                    self.bytes_read += (m.key().map_or(0, <[u8]>::len)
                        + m.payload().map_or(0, <[u8]>::len))
                        as u64;
                    messages.push(Message {
                        partition: p,
                        offset,
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        timestamp_ms: m.timestamp().to_millis(),
                    });
                    self.positions.insert(p, offset + 1);
                    self.at_end.remove(&p);
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    self.at_end.insert(p);
                    if self.all_at_end() {
                        break;
                    }
                }
                Err(e) => {
                    // librdkafka reconnects by itself; back off so a broker that is down
                    // costs a few log lines, not a busy loop. Positions are untouched.
                    self.errors_in_row = self.errors_in_row.saturating_add(1);
                    let backoff = Duration::from_millis(100)
                        .saturating_mul(1 << self.errors_in_row.min(6))
                        .min(Duration::from_secs(5));
                    tracing::warn!(
                        table = %self.table,
                        topic = %self.opts.topic,
                        error = %e,
                        errors_in_row = self.errors_in_row,
                        backoff_ms = backoff.as_millis() as u64,
                        "Kafka consumer error; retrying"
                    );
                    if messages.is_empty() {
                        tokio::time::sleep_until(deadline.min(Instant::now() + backoff)).await;
                    }
                    break;
                }
            }
            if until.is_some_and(|u| self.reached(u)) {
                break;
            }
        }
        if passed_end {
            // The consumer fetched past a bounded read's end: re-assign before reading on.
            self.reassign = true;
        }
        if messages.is_empty() {
            return Ok(None);
        }
        let mut by_partition: BTreeMap<i32, Vec<Message>> = BTreeMap::new();
        for m in messages {
            by_partition.entry(m.partition).or_default().push(m);
        }
        let mut parts = Vec::with_capacity(by_partition.len());
        for (partition, messages) in by_partition {
            let (batch, rejected) = self.layout.decode(&messages)?;
            self.rejected.extend(rejected);
            parts.push((partition.to_string(), batch));
        }
        Ok(Some(SourcePoll::Partitions(parts)))
    }

    fn all_at_end(&self) -> bool {
        self.partitions.iter().all(|p| self.at_end.contains(p))
    }

    fn reached(&self, until: &BTreeMap<i32, i64>) -> bool {
        until
            .iter()
            .all(|(p, end)| self.positions.get(p).is_some_and(|at| at >= end))
    }
}

fn to_offsets(table: &str, position: &Position) -> Result<BTreeMap<i32, i64>> {
    position
        .0
        .iter()
        .map(|(p, o)| {
            let partition = p.parse::<i32>().map_err(|_| {
                ConnectorError::Internal(format!(
                    "table '{table}': position names partition '{p}', not a Kafka partition number"
                ))
            })?;
            let offset = i64::try_from(*o).map_err(|_| {
                ConnectorError::Internal(format!("table '{table}': offset {o} out of range"))
            })?;
            Ok((partition, offset))
        })
        .collect()
}

#[async_trait]
impl Source for KafkaSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.layout.schema())
    }

    async fn poll_batch(&mut self, max_rows: usize, deadline: Instant) -> Result<SourcePoll> {
        if self.reassign {
            self.assign(None)?;
        }
        if self.opts.bounded && self.all_at_end() {
            return Ok(SourcePoll::Exhausted);
        }
        Ok(match self.read(max_rows, deadline, None).await? {
            Some(parts) => parts,
            None if self.opts.bounded && self.all_at_end() => SourcePoll::Exhausted,
            None => SourcePoll::Pending,
        })
    }

    fn position(&self) -> Position {
        Position(
            self.positions
                .iter()
                .map(|(p, o)| (p.to_string(), u64::try_from(*o).unwrap_or(0)))
                .collect(),
        )
    }

    fn partitions(&self) -> Vec<String> {
        self.partitions.iter().map(ToString::to_string).collect()
    }

    fn take_rejected(&mut self) -> Vec<RejectedRecord> {
        std::mem::take(&mut self.rejected)
    }

    fn bytes_read(&self) -> Option<u64> {
        Some(self.bytes_read)
    }

    fn monitor(&self) -> Option<Arc<dyn SourceMonitor>> {
        Some(Arc::new(KafkaMonitor {
            consumer: Arc::clone(&self.consumer),
            commit: !self.opts.shared,
        }))
    }

    async fn seek(&mut self, position: &Position) -> Result<()> {
        self.positions = to_offsets(&self.table, position)?;
        self.at_end.clear();
        self.reassign = true;
        Ok(())
    }

    /// Reads each partition up to its offset in `end` and no further (offsets have gaps where
    /// transaction markers sit, so the bound is per partition, not a row count).
    async fn poll_until(
        &mut self,
        end: &Position,
        max_rows: usize,
        deadline: Instant,
    ) -> Result<SourcePoll> {
        let until = to_offsets(&self.table, end)?;
        if self.reached(&until) {
            return Ok(SourcePoll::Exhausted);
        }
        self.assign(Some(&until))?;
        // Whatever happens next, normal reading must start again from the positions.
        self.reassign = true;
        Ok(self
            .read(max_rows, deadline, Some(&until))
            .await?
            .unwrap_or(SourcePoll::Pending))
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    use super::is_end_of_partition;

    #[test]
    fn end_of_partition_is_recognised_however_librdkafka_reports_it() {
        assert!(is_end_of_partition(&KafkaError::PartitionEOF(3)));
        assert!(is_end_of_partition(&KafkaError::Global(
            RDKafkaErrorCode::PartitionEOF
        )));
        assert!(!is_end_of_partition(&KafkaError::Global(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
    }
}
