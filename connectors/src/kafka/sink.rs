//! [`KafkaSink`]: each epoch's rows as JSON messages, keyed by the merge key, through an
//! idempotent producer.

use arrow::datatypes::SchemaRef;
use arrow::json::WriterBuilder;
use arrow::json::writer::LineDelimited;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use volley_sql::TableDecl;

use super::options::KafkaOptions;
use super::txn::{Progress, ids};
use crate::error::{ConnectorError, Result};
use crate::traits::{Sink, SinkContext};

/// Header naming the pipeline that wrote a message.
pub const PIPELINE_HEADER: &str = "volley.pipeline";
/// Header holding the epoch that wrote a message.
pub const EPOCH_HEADER: &str = "volley.epoch";
/// Prefix of the headers naming the models a message's row depends on:
/// `volley.model.<name>` = the model file's SHA-256.
pub const MODEL_HEADER_PREFIX: &str = "volley.model.";

/// Writes every row as one message: the value is the row as a JSON object (nulls written
/// out), the key the `merge_key` columns as a JSON object (no key without `merge_key`), and
/// the headers `volley.pipeline`, `volley.epoch` and `volley.model.<name>` (SHA-256, one per
/// model the rows depend on). The producer is idempotent, so a
/// retried send never duplicates; a replayed epoch sends its rows again, which a compacted
/// topic (or any reader keeping the last value per key) folds into the same state.
///
/// # Cancellation
/// A dropped `write_epoch` may leave part of the epoch sent; the replay sends it again.
pub struct KafkaSink {
    table: String,
    topic: String,
    producer: FutureProducer,
    key_columns: Option<Vec<usize>>,
    pipeline_id: String,
    /// `volley.model.<name>` headers and their values.
    model_headers: Vec<(String, String)>,
    /// `exactly_once`: the transactional progress, and the last epoch committed.
    progress: Option<Progress>,
    committed: Option<u64>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("table", &self.table)
            .field("topic", &self.topic)
            .field("key_columns", &self.key_columns)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Creates the producer for `table`'s topic.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] for bad options or a `merge_key` the output lacks;
    /// [`ConnectorError::External`] when the producer cannot be created.
    pub async fn open(
        table: &TableDecl,
        schema: &SchemaRef,
        context: &SinkContext,
    ) -> Result<Self> {
        let opts = KafkaOptions::from_table(table)?;
        let key_columns = match table.merge_key().filter(|k| !k.is_empty()) {
            None => None,
            Some(keys) => Some(
                keys.iter()
                    .map(|k| {
                        schema.index_of(k).map_err(|_| {
                            ConnectorError::config(
                                &table.name,
                                format!(
                                    "option 'merge_key' names '{k}', which is not an output column"
                                ),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        let (transactional_id, progress_group) = ids(context, &table.name);
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &opts.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // An epoch waits for its messages' acknowledgements, so lingering adds to every
            // epoch's latency; the messages of an epoch are queued at once and batch anyway.
            // (Flushing instead would wait in steps of 100 ms.)
            .set("linger.ms", "1")
            .set("message.timeout.ms", "120000");
        if opts.exactly_once {
            config
                .set("transactional.id", &transactional_id)
                .set("transaction.timeout.ms", "60000")
                .set("message.timeout.ms", "60000");
        }
        let producer: FutureProducer = config.create().map_err(|e| ConnectorError::External {
            table: table.name.clone(),
            message: format!("Kafka: cannot create a producer: {e}"),
            retryable: false,
        })?;
        let progress = if opts.exactly_once {
            Some(
                Progress::open(
                    &table.name,
                    &opts.brokers,
                    &opts.topic,
                    &progress_group,
                    &producer,
                )
                .await?,
            )
        } else {
            None
        };
        let committed = match &progress {
            Some(p) => p.committed().await?,
            None => None,
        };
        Ok(Self {
            table: table.name.clone(),
            topic: opts.topic,
            producer,
            key_columns,
            pipeline_id: context.pipeline_id.clone(),
            model_headers: context
                .models
                .iter()
                .map(|m| (format!("{MODEL_HEADER_PREFIX}{}", m.name), m.sha256.clone()))
                .collect(),
            progress,
            committed,
        })
    }

    fn failed(&self, doing: &str, e: &dyn std::fmt::Display) -> ConnectorError {
        ConnectorError::External {
            table: self.table.clone(),
            message: format!("Kafka: cannot {doing}: {e}"),
            retryable: true,
        }
    }
}

/// One JSON object per row of `batch` (nulls written), vectorized by arrow's JSON writer.
fn json_rows(batch: &RecordBatch) -> std::result::Result<Vec<Vec<u8>>, arrow::error::ArrowError> {
    let mut buffer = Vec::new();
    {
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, LineDelimited>(&mut buffer);
        writer.write(batch)?;
        writer.finish()?;
    }
    // JSON escapes newlines inside strings, so every '\n' ends a row.
    Ok(buffer
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

async fn settle(sink: &KafkaSink, pending: &mut Vec<DeliveryFuture>) -> Result<()> {
    for delivery in pending.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(sink.failed("deliver a message", &e)),
            Err(e) => return Err(sink.failed("deliver a message (cancelled)", &e)),
        }
    }
    Ok(())
}

#[async_trait]
impl Sink for KafkaSink {
    /// A topic cannot be emptied: starting over would leave the old run's messages beside the
    /// new ones, so it is refused.
    fn cannot_truncate(&self) -> Option<String> {
        Some(format!(
            "sink '{}': Kafka topic '{}' cannot be emptied, so starting over would leave the old run's messages beside the new ones; delete and recreate the topic, or point the sink at a new topic",
            self.table, self.topic
        ))
    }

    async fn truncate(&mut self) -> Result<()> {
        match self.cannot_truncate() {
            Some(why) => Err(ConnectorError::config(&self.table, why)),
            None => Ok(()),
        }
    }

    async fn write_epoch(&mut self, epoch: u64, batches: &[RecordBatch]) -> Result<()> {
        let Some(progress) = self.progress.take() else {
            return self.send_epoch(epoch, batches).await;
        };
        if epoch > 0 && self.committed.is_some_and(|c| c >= epoch) {
            self.progress = Some(progress);
            return Ok(());
        }
        let result = async {
            progress.begin(&self.producer)?;
            if let Err(e) = self.send_epoch(epoch, batches).await {
                progress.abort(&self.producer).await;
                return Err(e);
            }
            progress.commit(&self.producer, epoch).await
        }
        .await;
        self.progress = Some(progress);
        result?;
        self.committed = Some(epoch);
        Ok(())
    }

    /// The progress group's offset as read when the sink opened (after fencing earlier
    /// instances, so nobody else commits), advanced by this sink's own commits.
    async fn committed_epoch(&mut self) -> Result<Option<u64>> {
        Ok(self.committed)
    }

    async fn close(&mut self) -> Result<()> {
        self.flush().await
    }
}

impl KafkaSink {
    /// Sends every row of `batches` and waits for the broker to acknowledge them.
    async fn send_epoch(&self, epoch: u64, batches: &[RecordBatch]) -> Result<()> {
        let epoch_text = epoch.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: PIPELINE_HEADER,
                value: Some(self.pipeline_id.as_str()),
            })
            .insert(Header {
                key: EPOCH_HEADER,
                value: Some(epoch_text.as_str()),
            });
        for (key, sha256) in &self.model_headers {
            headers = headers.insert(Header {
                key: key.as_str(),
                value: Some(sha256.as_str()),
            });
        }
        let mut pending: Vec<DeliveryFuture> = Vec::new();
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let values = json_rows(batch).map_err(|e| self.failed("encode rows as JSON", &e))?;
            let keys = match &self.key_columns {
                None => None,
                Some(columns) => Some(
                    batch
                        .project(columns)
                        .map_err(|e| self.failed("project the merge key", &e))
                        .and_then(|k| {
                            json_rows(&k).map_err(|e| self.failed("encode keys as JSON", &e))
                        })?,
                ),
            };
            for (i, value) in values.iter().enumerate() {
                let key = keys.as_ref().map(|k| k[i].as_slice());
                loop {
                    let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
                        .payload(value.as_slice())
                        .headers(headers.clone());
                    if let Some(key) = key {
                        record = record.key(key);
                    }
                    match self.producer.send_result(record) {
                        Ok(delivery) => {
                            pending.push(delivery);
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                            // The local queue is full: wait for what is in flight, then retry.
                            settle(self, &mut pending).await?;
                        }
                        Err((e, _)) => return Err(self.failed("send a message", &e)),
                    }
                }
            }
        }
        settle(self, &mut pending).await
    }

    /// Sends everything queued and waits until the broker acknowledged it.
    async fn flush(&self) -> Result<()> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(std::time::Duration::from_secs(60)))
            .await
            .map_err(|e| ConnectorError::Internal(format!("flush task failed: {e}")))?
            .map_err(|e| self.failed("flush", &e))
    }
}
