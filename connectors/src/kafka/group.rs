//! Consumer-group membership for scale-out: several `volley run` processes of one pipeline
//! join the table's `group`, and Kafka's own group protocol decides which process owns which
//! partition. Volley adds no coordinator.
//!
//! The member only takes part in the protocol: its assigned partitions are paused, so it
//! fetches nothing. Each owned partition is read by its own assigned [`super::KafkaSource`],
//! whose positions live in that partition's checkpoints. A revocation blocks the rebalance
//! until the engine has stopped the partition's work ([`GroupEvent::Revoked`]), so the next
//! owner never starts while this one still writes.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::options::KafkaOptions;
use crate::error::{ConnectorError, Result};

/// A change in what this process owns.
#[derive(Debug)]
pub enum GroupEvent {
    /// These partitions are this process's now.
    Assigned(Vec<i32>),
    /// These partitions are being taken away: stop their work, then send on `done`. The
    /// group waits (up to its rebalance timeout) before handing them to another process.
    Revoked {
        /// The partitions leaving this process.
        partitions: Vec<i32>,
        /// Signal that their work has stopped.
        done: std_mpsc::SyncSender<()>,
    },
    /// The membership failed for good (the group or the broker refused it).
    Failed(String),
}

#[derive(Debug)]
enum Command {
    Commit(Vec<(i32, i64)>),
    Leave,
}

/// Commits `(partition, next offset)` pairs to the group, for monitoring tools (lag per
/// partition); positions themselves live in checkpoints.
#[derive(Debug, Clone)]
pub struct GroupCommitter(std_mpsc::Sender<Command>);

impl GroupCommitter {
    /// Commits the offsets. Best effort: a partition this process no longer owns is refused
    /// by the group and ignored.
    pub fn commit(&self, offsets: Vec<(i32, i64)>) {
        let _ = self.0.send(Command::Commit(offsets));
    }
}

/// This process's membership in a table's consumer group.
#[derive(Debug)]
pub struct GroupMember {
    table: String,
    events: mpsc::UnboundedReceiver<GroupEvent>,
    commands: std_mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

struct MemberContext {
    topic: String,
    events: mpsc::UnboundedSender<GroupEvent>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions = partitions_of(list, &self.topic);
            if partitions.is_empty() {
                return;
            }
            let (done, stopped) = std_mpsc::sync_channel(1);
            if self
                .events
                .send(GroupEvent::Revoked { partitions, done })
                .is_ok()
            {
                // The engine stops the partitions' work before this returns.
                let _ = stopped.recv();
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                // Membership only: partition sources read the data.
                if let Err(e) = consumer.pause(list) {
                    tracing::warn!(topic = %self.topic, error = %e, "cannot pause the group member's partitions");
                }
                let _ = self
                    .events
                    .send(GroupEvent::Assigned(partitions_of(list, &self.topic)));
            }
            Rebalance::Error(e) => {
                tracing::warn!(topic = %self.topic, error = %e, "consumer group rebalance error");
            }
            Rebalance::Revoke(_) => {}
        }
    }
}

fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<i32> {
    let mut partitions: Vec<i32> = list
        .elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(rdkafka::topic_partition_list::TopicPartitionListElem::partition)
        .collect();
    partitions.sort_unstable();
    partitions
}

impl GroupMember {
    /// Joins `opts.group` for `opts.topic`. Events arrive through [`GroupMember::next`].
    ///
    /// # Errors
    /// [`ConnectorError::External`] when the consumer cannot be created or subscribed.
    pub fn join(table: &str, opts: &KafkaOptions) -> Result<Self> {
        let (tx, events) = mpsc::unbounded_channel();
        let session = opts.session_timeout.as_millis().max(1000);
        let context = MemberContext {
            topic: opts.topic.clone(),
            events: tx.clone(),
        };
        let consumer: BaseConsumer<MemberContext> = ClientConfig::new()
            .set("bootstrap.servers", &opts.brokers)
            .set("group.id", &opts.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 6).max(100).to_string())
            .create_with_context(context)
            .map_err(|e| member_error(table, "create the group member", &e))?;
        consumer
            .subscribe(&[&opts.topic])
            .map_err(|e| member_error(table, "subscribe to the topic", &e))?;
        let (commands, inbox) = std_mpsc::channel();
        let topic = opts.topic.clone();
        let name = table.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("volley-group-{table}"))
            .spawn(move || serve(&consumer, &topic, &name, &inbox, &tx))
            .map_err(|e| ConnectorError::Internal(format!("cannot start the group thread: {e}")))?;
        Ok(Self {
            table: table.to_string(),
            events,
            commands,
            thread: Some(thread),
        })
    }

    /// The next change in ownership (`None` once the member has stopped).
    pub async fn next(&mut self) -> Option<GroupEvent> {
        self.events.recv().await
    }

    /// A handle that commits read offsets through this member (see [`GroupCommitter`]).
    pub fn committer(&self) -> GroupCommitter {
        GroupCommitter(self.commands.clone())
    }

    /// Leaves the group (its partitions move to the other members at once).
    pub fn leave(mut self) {
        self.events.close();
        let _ = self.commands.send(Command::Leave);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!(table = %self.table, "the group thread panicked while leaving");
        }
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.events.close();
        let _ = self.commands.send(Command::Leave);
    }
}

/// The member's thread: polls (which serves heartbeats and rebalances) and runs commands.
fn serve(
    consumer: &BaseConsumer<MemberContext>,
    topic: &str,
    table: &str,
    inbox: &std_mpsc::Receiver<Command>,
    events: &mpsc::UnboundedSender<GroupEvent>,
) {
    loop {
        loop {
            match inbox.try_recv() {
                Ok(Command::Commit(offsets)) => commit(consumer, topic, table, &offsets),
                Ok(Command::Leave) | Err(std_mpsc::TryRecvError::Disconnected) => {
                    consumer.unsubscribe();
                    return;
                }
                Err(std_mpsc::TryRecvError::Empty) => break,
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            None | Some(Ok(_)) => {}
            Some(Err(e)) => {
                if let Some(code) = e.rdkafka_error_code()
                    && matches!(
                        code,
                        rdkafka::types::RDKafkaErrorCode::Fatal
                            | rdkafka::types::RDKafkaErrorCode::GroupAuthorizationFailed
                            | rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed
                    )
                {
                    let _ = events.send(GroupEvent::Failed(format!(
                        "table '{table}': Kafka consumer group: {e}"
                    )));
                    return;
                }
                tracing::warn!(table, error = %e, "Kafka consumer group error; retrying");
            }
        }
    }
}

fn commit(
    consumer: &BaseConsumer<MemberContext>,
    topic: &str,
    table: &str,
    offsets: &[(i32, i64)],
) {
    let mut list = TopicPartitionList::new();
    for &(partition, offset) in offsets {
        if list
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .is_err()
        {
            return;
        }
    }
    if let Err(e) = consumer.commit(&list, rdkafka::consumer::CommitMode::Async) {
        tracing::debug!(table, error = %e, "offset commit to the group refused");
    }
}

fn member_error(table: &str, doing: &str, e: &rdkafka::error::KafkaError) -> ConnectorError {
    ConnectorError::External {
        table: table.to_string(),
        message: format!("Kafka consumer group: cannot {doing}: {e}"),
        retryable: true,
    }
}
