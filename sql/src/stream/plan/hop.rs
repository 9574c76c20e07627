//! Hop windows among an aggregate's group keys.

use crate::stream::window::{WindowSize, WindowSpec};

use crate::error::{Result, SqlError, StatementRef};

use super::StreamPlanner;
use crate::stream::graph::{OutputPort, port};

impl StreamPlanner {
    /// The window of a hop found among the group keys: panes over a watermarked source column.
    pub(super) fn hop_window(
        &self,
        call: &crate::stream::hop::HopCall,
        at: StatementRef,
        ports: &[OutputPort],
    ) -> Result<WindowSpec> {
        let name = call.display.clone();
        let mut sources = Vec::new();
        let mut column = String::new();
        for origin in &call.origins {
            if let Some(port) = port(ports, &origin.input) {
                return Err(SqlError::Unsupported {
                    at,
                    message: format!(
                        "GROUP BY {name}: hop windows over {} rows are not streamed yet: hop over each stream's rows, then aggregate the hop windows' rows or join them on their window",
                        port.possessive()
                    ),
                });
            }
            let time = self.source_event_time(
                origin,
                &format!("GROUP BY {name}"),
                "the hop windows would never close and their state would grow forever",
                at,
            )?;
            column = time.column;
            sources.push(time.table);
        }
        Ok(WindowSpec {
            hop: Some(crate::stream::window::HopWindow {
                slide: call.sizes.slide,
                size: call.sizes.size,
            }),
            ..WindowSpec::tumbling(
                call.group_index,
                WindowSize::Fixed(call.sizes.pane),
                call.unit,
                column,
                sources,
                name,
            )
        })
    }
}
