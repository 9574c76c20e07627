//! What a checkpoint and an epoch-log entry record (JSON; aggregate state is Arrow IPC beside it).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use volley_connectors::Position;

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

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
pub struct QueryCheckpoint {
    /// The INSERT's target table.
    pub target: String,
    /// What the state means; restoring into a query with a different shape is refused.
    pub shape: String,
    /// Windows at or below this end had been emitted (window column's unit).
    pub emitted_upto: Option<i64>,
    /// The Arrow IPC file (beside the manifest) holding the aggregate's state rows.
    pub state_file: Option<String>,
    /// State rows in that file.
    pub state_rows: u64,
    /// The Arrow IPC file holding `state_ttl` stamps (keyed aggregates with `state_ttl`).
    #[serde(default)]
    pub stamps_file: Option<String>,
    /// The state of the aggregates feeding this INSERT's own (an aggregate over an
    /// aggregate), innermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inner: Vec<StageCheckpoint>,
    /// The state of the query's other operators (a windowed join), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<OperatorCheckpoint>,
}

/// The named state of one operator, as of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorCheckpoint {
    /// The operator (`<target>#join`).
    pub operator: String,
    /// Where it had got to in event time (the operator's unit): a windowed join's window
    /// start before which every window was joined; an interval join's left and right
    /// watermarks its sides were last trimmed by.
    pub marks: Vec<Option<i64>>,
    /// Its pieces of state (a join's `left` and `right` rows).
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

/// The state of an aggregate feeding another, as of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageCheckpoint {
    /// What reads its rows in the plan (`<target>#aggregate<n>`).
    pub name: String,
    /// Windows at or below this end had been emitted (window column's unit).
    pub emitted_upto: Option<i64>,
    /// The Arrow IPC file (beside the manifest) holding its state rows.
    pub state_file: String,
    /// State rows in that file.
    pub state_rows: u64,
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
