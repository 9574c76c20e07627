//! The `watermark` option: which column is event time, and how late rows may arrive.

use std::time::Duration;

use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Value};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::options::parse_duration;

/// `'<column> - INTERVAL ''<d>'''`: the watermark trails the largest event time seen by `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkSpec {
    /// The event-time column.
    pub column: String,
    /// Bound on out-of-orderness.
    pub delay: Duration,
}

impl WatermarkSpec {
    /// Parses `col` or `col - INTERVAL '5 seconds'`. Returns a message describing the problem.
    ///
    /// # Errors
    /// A human-readable reason when the text is not of that form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expr = Parser::new(&GenericDialect {})
            .try_with_sql(text)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| format!("not an expression: {e}"))?;
        match expr {
            Expr::Identifier(ident) => Ok(Self {
                column: ident.value,
                delay: Duration::ZERO,
            }),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Minus,
                right,
            } => {
                let column = match *left {
                    Expr::Identifier(ident) => ident.value,
                    other => return Err(format!("'{other}' is not a column name")),
                };
                let delay = match *right {
                    Expr::Interval(interval) => interval_text(&interval.value)
                        .and_then(|t| {
                            let unit = interval
                                .leading_field
                                .map(|f| f.to_string())
                                .unwrap_or_default();
                            parse_duration(&format!("{t} {unit}"))
                        })
                        .ok_or_else(|| format!("cannot read interval '{}'", interval.value))?,
                    other => return Err(format!("'{other}' is not an INTERVAL")),
                };
                Ok(Self { column, delay })
            }
            other => Err(format!("'{other}' is not '<column> - INTERVAL ...'")),
        }
    }
}

fn interval_text(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.clone()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_column_minus_interval() {
        let w = WatermarkSpec::parse("event_time - INTERVAL '5 seconds'").unwrap();
        assert_eq!(w.column, "event_time");
        assert_eq!(w.delay, Duration::from_secs(5));
        let w = WatermarkSpec::parse("ts - INTERVAL '2' MINUTE").unwrap();
        assert_eq!(w.delay, Duration::from_secs(120));
        let w = WatermarkSpec::parse("ts").unwrap();
        assert_eq!(w.delay, Duration::ZERO);
        assert!(WatermarkSpec::parse("ts + 1").is_err());
    }
}
