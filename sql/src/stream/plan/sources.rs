//! The one check every windowed operator makes of its event time: a column traced to a
//! source must be that source's watermarked event-time column, or nothing would ever close.

use super::StreamPlanner;
use crate::error::{Result, SqlError, StatementRef};
use crate::stream::trace::ColumnOrigin;

/// A source's watermarked event-time column that an operator's time was traced to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTime {
    /// The source table.
    pub table: String,
    /// Its event-time column.
    pub column: String,
}

impl StreamPlanner {
    /// `origin` as a source's watermarked event-time column: `Ok(None)` when `origin` is not a
    /// source (an operator's output, which the caller judges); an error naming `what` and
    /// `consequence` when the source's column has no watermark.
    pub(crate) fn event_time(
        &self,
        origin: &ColumnOrigin,
        what: &str,
        consequence: &str,
        at: StatementRef,
    ) -> Result<Option<EventTime>> {
        let Some(source) = self.sources.get(&origin.input) else {
            return Ok(None);
        };
        let column = source
            .schema
            .fields()
            .get(origin.column)
            .map(|f| f.name().clone())
            .ok_or_else(|| {
                SqlError::Internal(format!(
                    "column {} of source '{}' traced, but it has no such column",
                    origin.column, source.name
                ))
            })?;
        match &source.watermark {
            Some(wm) if wm.column == column => Ok(Some(EventTime {
                table: source.name.clone(),
                column,
            })),
            _ => Err(SqlError::Unsupported {
                at,
                message: format!(
                    "{what}: column '{column}' of table '{}' has no watermark, so {consequence}. Declare one: OPTIONS ('watermark' '{column} - INTERVAL ''5 seconds''')",
                    source.name
                ),
            }),
        }
    }

    /// [`StreamPlanner::event_time`] of a time traced from a source, where an input other
    /// than a source would be a bug.
    pub(crate) fn source_event_time(
        &self,
        origin: &ColumnOrigin,
        what: &str,
        consequence: &str,
        at: StatementRef,
    ) -> Result<EventTime> {
        self.event_time(origin, what, consequence, at)?
            .ok_or_else(|| {
                SqlError::Internal(format!(
                    "{what}: the time was traced to unknown input '{}'",
                    origin.input
                ))
            })
    }
}
