//! Statement parameters: JDBC's `?` placeholders, their schema, and binding rows of values.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::QueryError;

/// `sql` with JDBC/ODBC `?` placeholders numbered as DataFusion's `$1, $2, …`, in order.
/// Question marks inside strings, quoted identifiers and comments are left alone.
///
/// # Errors
/// [`QueryError::Query`] when the statement does not tokenize, or mixes `?` with `$n`.
pub(super) fn positional(sql: &str) -> Result<String, QueryError> {
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| QueryError::Query(e.to_string()))?;
    let is_mark = |t: &Token| matches!(t, Token::Placeholder(p) if p == "?");
    if !tokens.iter().any(is_mark) {
        return Ok(sql.to_string());
    }
    if tokens
        .iter()
        .any(|t| matches!(t, Token::Placeholder(p) if p.starts_with('$')))
    {
        return Err(QueryError::Query(
            "the statement mixes '?' and '$n' parameters: use one kind".into(),
        ));
    }
    let mut next = 0;
    let mut out = String::with_capacity(sql.len() + 8);
    for token in tokens {
        if is_mark(&token) {
            next += 1;
            out.push_str(&format!("${next}"));
        } else {
            out.push_str(&token.to_string());
        }
    }
    Ok(out)
}

/// The positional parameters of `plan` (`$1` … `$n`) with the type each is used as, where
/// the plan tells; `Null` where it does not (any value is accepted).
///
/// # Errors
/// [`QueryError::Query`] for named parameters or a gap in the numbering.
pub(super) fn parameters(plan: &LogicalPlan) -> Result<SchemaRef, QueryError> {
    let types = plan
        .get_parameter_types()
        .map_err(|e| QueryError::Query(e.strip_backtrace().to_string()))?;
    let mut numbered = types
        .into_iter()
        .map(
            |(name, ty)| match name.strip_prefix('$').map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => Ok((n, ty)),
                _ => Err(QueryError::Query(format!(
                    "parameter '{name}' is not positional: use '?' or $1, $2, …"
                ))),
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    numbered.sort_by_key(|(n, _)| *n);
    let fields = numbered
        .into_iter()
        .enumerate()
        .map(|(i, (n, ty))| {
            if n == i + 1 {
                Ok(Field::new(format!("${n}"), ty.unwrap_or(DataType::Null), true))
            } else {
                Err(QueryError::Query(format!(
                    "parameter ${} is never used but ${n} is: number parameters from $1 without gaps",
                    i + 1
                )))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// `plan` once per row of `values`, each with that row bound to its parameters by position
/// and cast to the type the parameter is used as.
///
/// # Errors
/// [`QueryError::Query`] when the number of values is not the number of parameters, or a
/// value cannot be cast to its parameter's type.
pub(super) fn bind(
    plan: &LogicalPlan,
    expected: &Schema,
    values: &RecordBatch,
) -> Result<Vec<LogicalPlan>, QueryError> {
    if values.num_columns() != expected.fields().len() {
        return Err(QueryError::Query(format!(
            "the statement has {} parameter(s), {} value(s) were bound",
            expected.fields().len(),
            values.num_columns()
        )));
    }
    (0..values.num_rows())
        .map(|row| {
            let row_values = values
                .columns()
                .iter()
                .zip(expected.fields())
                .map(|(column, field)| {
                    let value = ScalarValue::try_from_array(column, row)
                        .map_err(|e| QueryError::Internal(e.to_string()))?;
                    if field.data_type() == &DataType::Null
                        || value.data_type() == *field.data_type()
                    {
                        return Ok(value);
                    }
                    value.cast_to(field.data_type()).map_err(|e| {
                        QueryError::Query(format!(
                            "parameter {} is used as {} but was bound to {} ({value}): {}",
                            field.name(),
                            field.data_type(),
                            value.data_type(),
                            e.strip_backtrace()
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            plan.clone()
                .with_param_values(row_values)
                .map_err(|e| QueryError::Query(e.strip_backtrace().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::positional;

    #[test]
    fn question_marks_are_numbered_outside_strings_and_comments() {
        assert_eq!(
            positional("SELECT '?', \"a?\" FROM t WHERE x = ? AND y > ? -- ?\n").unwrap(),
            "SELECT '?', \"a?\" FROM t WHERE x = $1 AND y > $2 -- ?\n"
        );
        assert_eq!(positional("SELECT 1").unwrap(), "SELECT 1");
        assert_eq!(positional("SELECT '?'").unwrap(), "SELECT '?'");
        assert!(positional("SELECT ? + $1").is_err());
    }
}
