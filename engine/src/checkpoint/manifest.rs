//! What a checkpoint and an epoch-log entry record (JSON; aggregate state is Arrow IPC beside it).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use volley_connectors::Position;

/// The manifest format this build writes (3: operator state named by the operator's stable id
/// rather than its position; 2 and 1 are read by position).
pub const FORMAT: u32 = 3;

/// The oldest manifest format this build reads (format 1 is read as format 2).
pub const OLDEST_FORMAT: u32 = 1;

/// One source as of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceCheckpoint {
    /// Table name.
    pub name: String,
    /// Where reading resumes.
    pub position: Position,
    /// Largest event time seen (nanoseconds).
    pub max_event_time: Option<i64>,
    /// Largest event time per partition (the watermark's basis; `""` for a one-stream source).
    #[serde(default)]
    pub partition_max: BTreeMap<String, i64>,
    /// The watermark (nanoseconds), which never goes back.
    #[serde(default)]
    pub watermark: Option<i64>,
    /// Whether the source had ended.
    pub exhausted: bool,
    /// Rows read so far.
    pub rows: u64,
}

/// One INSERT's state as of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "QueryRecord")]
pub struct QueryCheckpoint {
    /// The INSERT's target table.
    pub target: String,
    /// What the state means; restoring into a query with a different shape is refused.
    pub shape: String,
    /// State rows held, over all its operators.
    pub state_rows: u64,
    /// The named state of each of its stateful operators, in plan order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<OperatorCheckpoint>,
}

/// A [`QueryCheckpoint`] as either format writes it: format 1 kept the query's own
/// aggregate's state in its own fields and the aggregates feeding it in `inner`.
#[derive(Deserialize)]
struct QueryRecord {
    target: String,
    shape: String,
    #[serde(default)]
    state_rows: u64,
    #[serde(default)]
    operators: Vec<OperatorCheckpoint>,
    #[serde(default)]
    emitted_upto: Option<i64>,
    #[serde(default)]
    state_file: Option<String>,
    #[serde(default)]
    stamps_file: Option<String>,
    #[serde(default)]
    inner: Vec<StageCheckpoint>,
}

impl From<QueryRecord> for QueryCheckpoint {
    /// Format 1's aggregates become operators named as the planner names them: the
    /// innermost `<target>#aggregate`, the others `<target>#aggregate<n>` after the number
    /// of aggregates feeding them.
    fn from(record: QueryRecord) -> Self {
        let piece = |name: &str, file: String, rows: u64| NamedState {
            name: name.to_string(),
            file,
            rows,
        };
        let mut operators: Vec<OperatorCheckpoint> = record
            .inner
            .iter()
            .map(|stage| OperatorCheckpoint {
                operator: stage.name.clone(),
                marks: vec![stage.emitted_upto],
                state: vec![piece("state", stage.state_file.clone(), stage.state_rows)],
            })
            .collect();
        let format_one = record.state_file.is_some() || !record.inner.is_empty();
        if let Some(file) = record.state_file {
            let operator = if record.inner.is_empty() {
                format!("{}#aggregate", record.target)
            } else {
                format!("{}#aggregate{}", record.target, record.inner.len())
            };
            let mut state = vec![piece("state", file, record.state_rows)];
            if let Some(stamps) = record.stamps_file {
                state.push(piece("stamps", stamps, 0));
            }
            operators.push(OperatorCheckpoint {
                operator,
                marks: vec![record.emitted_upto],
                state,
            });
        }
        operators.extend(record.operators);
        let state_rows = if format_one {
            operators
                .iter()
                .flat_map(|o| &o.state)
                .map(|s| s.rows)
                .sum()
        } else {
            record.state_rows
        };
        Self {
            target: record.target,
            shape: record.shape,
            state_rows,
            operators,
        }
    }
}

/// The named state of one operator, as of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorCheckpoint {
    /// The operator: the input name its rows are read under (`<target>#aggregate<n>`,
    /// `<target>#join`).
    pub operator: String,
    /// Where it had got to in event time (the operator's unit): an aggregate's end at or
    /// below which windows were emitted; a windowed join's window start before which every
    /// window was joined; an interval join's left and right watermarks its sides were last
    /// trimmed by.
    pub marks: Vec<Option<i64>>,
    /// Its pieces of state (an aggregate's `state` and `stamps`, a join's `left`, `right`
    /// and `matched` rows).
    pub state: Vec<NamedState>,
}

/// One named piece of an operator's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedState {
    /// Its name within the operator.
    pub name: String,
    /// The Arrow IPC file (beside the manifest) holding it.
    pub file: String,
    /// Rows in that file.
    pub rows: u64,
}

/// Format 1: the state of an aggregate feeding another.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct StageCheckpoint {
    name: String,
    emitted_upto: Option<i64>,
    state_file: String,
    state_rows: u64,
}

/// One live table's rows as of a checkpoint, so a restart serves what it served before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveCheckpoint {
    /// The live table (its sink's name).
    pub name: String,
    /// The Arrow IPC file (beside the manifest) holding its rows.
    pub file: String,
    /// Rows in that file.
    pub rows: u64,
}

/// Run totals carried across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Rows read from all sources.
    pub rows_in: u64,
    /// Rows written per sink.
    pub rows_out: BTreeMap<String, u64>,
    /// Late rows sent to dead letters.
    pub late_rows: u64,
    /// Undecodable records sent to dead letters.
    #[serde(default)]
    pub rejected_records: u64,
    /// Windows emitted.
    pub windows_emitted: u64,
    /// Groups forgotten by `state_ttl`.
    #[serde(default)]
    pub groups_expired: u64,
    /// Windows corrected by late rows within `allowed_lateness`.
    #[serde(default)]
    pub windows_corrected: u64,
    /// Per sink: the epochs that wrote rows to it.
    #[serde(default)]
    pub sinks: BTreeMap<String, crate::job::SinkEpochs>,
    /// What each source sent to dead letters (for the `max_dead_letters` verdict).
    #[serde(default)]
    pub sources: BTreeMap<String, crate::job::SourceLetters>,
}

/// Everything needed to resume after epoch `epoch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The last epoch whose effects this checkpoint includes.
    pub epoch: u64,
    /// The pipeline's fingerprint when the checkpoint was written (see
    /// [`crate::checkpoint::fingerprint`]).
    #[serde(default)]
    pub fingerprint: String,
    /// The pipeline's statements, without the options that do not change results (see
    /// [`crate::checkpoint::fingerprint::statements`]): a restore refuses another pipeline.
    #[serde(default)]
    pub statements: Vec<String>,
    /// Sources, in job order.
    pub sources: Vec<SourceCheckpoint>,
    /// Queries, in statement order.
    pub queries: Vec<QueryCheckpoint>,
    /// Live tables (written when the job keeps them).
    #[serde(default)]
    pub live: Vec<LiveCheckpoint>,
    /// The version of each versioned lookup table the checkpoint's epoch joined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lookups: Vec<LookupVersion>,
    /// Totals so far.
    pub totals: Totals,
    /// Wall-clock time of the checkpoint (ms since the Unix epoch), for operators.
    pub written_at_ms: u64,
}

/// One source's part of an epoch-log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRange {
    /// Table name.
    pub name: String,
    /// Position before the epoch's rows.
    pub start: Position,
    /// Position after them.
    pub end: Position,
    /// Whether the source had ended by the end of the epoch.
    pub exhausted: bool,
    /// Partitions the epoch found idle (left out of the watermark).
    #[serde(default)]
    pub idle: BTreeSet<String>,
}

/// The version of a lookup table an epoch joined (Delta tables, which have versions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupVersion {
    /// Table name.
    pub name: String,
    /// Its version.
    pub version: u64,
}

/// The input of one epoch, logged durably before it is processed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// The epoch.
    pub epoch: u64,
    /// Per source, in job order.
    pub sources: Vec<SourceRange>,
    /// The version of each versioned lookup table the epoch joined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lookups: Vec<LookupVersion>,
}
