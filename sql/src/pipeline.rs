//! A pipeline file: its tables (`CREATE EXTERNAL TABLE`) and its work (`INSERT INTO … SELECT`).

use std::sync::Arc;

use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{CreateExternalTable, DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, ObjectNamePart, Query, Statement as SqlStatement, TableObject, Value,
};

use crate::error::{Result, SqlError, StatementRef};
use crate::model::{ModelDecl, as_create_table, model_decl};
use crate::options::TableOptions;
use crate::splitter::split_statements;
use crate::table::{KindCatalog, TableDecl};
use crate::watermark::WatermarkSpec;

/// One `INSERT INTO target SELECT …` statement.
#[derive(Debug, Clone)]
pub struct InsertDecl {
    /// The table written to.
    pub target: String,
    /// The query whose rows are written.
    pub query: Box<Query>,
    /// Where the statement is.
    pub at: StatementRef,
}

/// A parsed, validated pipeline: every table and every INSERT, in file order.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Declared tables, in file order.
    pub tables: Vec<TableDecl>,
    /// INSERT statements, in file order.
    pub inserts: Vec<InsertDecl>,
    /// Declared models (`CREATE MODEL`), in file order.
    pub models: Vec<ModelDecl>,
}

impl Pipeline {
    /// Reads pipeline SQL: only `CREATE EXTERNAL TABLE`, `CREATE MODEL` and
    /// `INSERT INTO … SELECT` are allowed.
    ///
    /// # Errors
    /// Syntax errors and bad declarations, naming the statement, table and option at fault.
    pub async fn parse(sql: &str, catalog: &dyn KindCatalog) -> Result<Self> {
        let mut pipeline = Pipeline {
            tables: Vec::new(),
            inserts: Vec::new(),
            models: Vec::new(),
        };
        for (i, raw) in split_statements(sql).into_iter().enumerate() {
            let at = StatementRef {
                index: i + 1,
                line: raw.line,
            };
            pipeline.add_statement(&raw.text, at, catalog).await?;
        }
        Ok(pipeline)
    }

    /// Adds one statement (without `;`) to the pipeline.
    ///
    /// # Errors
    /// As for [`Pipeline::parse`].
    pub async fn add_statement(
        &mut self,
        text: &str,
        at: StatementRef,
        catalog: &dyn KindCatalog,
    ) -> Result<()> {
        let model = as_create_table(text);
        let text = model.as_deref().unwrap_or(text);
        let mut parsed = DFParser::parse_sql(text).map_err(|e| SqlError::Parse {
            at,
            message: e
                .to_string()
                .replace("SQL error: ParserError(\"", "")
                .replace("\")", ""),
        })?;
        let statement = match (parsed.pop_front(), parsed.is_empty()) {
            (Some(s), true) => s,
            _ => {
                return Err(SqlError::Parse {
                    at,
                    message: "expected exactly one statement".into(),
                });
            }
        };
        match statement {
            DfStatement::CreateExternalTable(create) if model.is_some() => {
                let location = create.locations.first().cloned().unwrap_or_default();
                let decl = model_decl(
                    object_name(&create.name),
                    &create.file_type,
                    location,
                    create
                        .options
                        .iter()
                        .map(|(k, v)| (k.clone(), option_text(v))),
                    at,
                )?;
                if self.model(&decl.name).is_some() {
                    return Err(SqlError::Plan {
                        at,
                        message: format!("model '{}' is declared twice", decl.name),
                    });
                }
                self.models.push(decl);
            }
            DfStatement::CreateExternalTable(create) => {
                let table = table_decl(create, at, catalog).await?;
                if self.table(&table.name).is_some() {
                    return Err(SqlError::Plan {
                        at,
                        message: format!("table '{}' is declared twice", table.name),
                    });
                }
                self.tables.push(table);
            }
            DfStatement::Statement(stmt) => match *stmt {
                SqlStatement::Insert(insert) => {
                    let target = match &insert.table {
                        TableObject::TableName(name) => object_name(name),
                        other => {
                            return Err(SqlError::Unsupported {
                                at,
                                message: format!(
                                    "INSERT INTO {other}: only table names can be written"
                                ),
                            });
                        }
                    };
                    if !insert.columns.is_empty() {
                        return Err(SqlError::Unsupported {
                            at,
                            message: "INSERT with a column list is not supported: name the columns in the SELECT".into(),
                        });
                    }
                    let query = insert.source.ok_or_else(|| SqlError::Unsupported {
                        at,
                        message: "INSERT needs a SELECT query".into(),
                    })?;
                    if self.table(&target).is_none() {
                        return Err(SqlError::Plan {
                            at,
                            message: format!(
                                "INSERT INTO '{target}': no such table; declare it with CREATE EXTERNAL TABLE first"
                            ),
                        });
                    }
                    self.inserts.push(InsertDecl { target, query, at });
                }
                other => {
                    return Err(SqlError::Unsupported {
                        at,
                        message: format!(
                            "a pipeline holds only CREATE EXTERNAL TABLE, CREATE MODEL and INSERT INTO … SELECT statements, not '{}'",
                            first_words(&other.to_string())
                        ),
                    });
                }
            },
            other => {
                return Err(SqlError::Unsupported {
                    at,
                    message: format!(
                        "a pipeline holds only CREATE EXTERNAL TABLE, CREATE MODEL and INSERT INTO … SELECT statements, not '{}'",
                        first_words(&other.to_string())
                    ),
                });
            }
        }
        Ok(())
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&TableDecl> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The model named `name`.
    pub fn model(&self, name: &str) -> Option<&ModelDecl> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Tables written by some INSERT.
    pub fn sink_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.inserts.iter().map(|i| i.target.as_str()).collect();
        names.dedup();
        names
    }
}

fn first_words(text: &str) -> String {
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Identifier normalisation as DataFusion does it: unquoted names are lower-cased.
fn ident(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

fn object_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(i) => ident(i),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

async fn table_decl(
    create: CreateExternalTable,
    at: StatementRef,
    catalog: &dyn KindCatalog,
) -> Result<TableDecl> {
    let name = object_name(&create.name);
    let kind = create.file_type.to_ascii_uppercase();
    let kind_options = catalog
        .kind_options(&kind)
        .ok_or_else(|| SqlError::UnknownKind {
            table: name.clone(),
            kind: kind.clone(),
            allowed: catalog.kinds().join(", "),
        })?;
    let raw_options = create
        .options
        .iter()
        .map(|(k, v)| (k.clone(), option_text(v)));
    let options = TableOptions::validate(&name, &kind, raw_options, kind_options)?;
    let location = match create.locations.as_slice() {
        [one] => one.clone(),
        [] => String::new(),
        _ => {
            return Err(SqlError::Unsupported {
                at,
                message: format!("table '{name}': give one LOCATION"),
            });
        }
    };
    let declared_schema = if create.columns.is_empty() {
        None
    } else {
        let ctx = SessionContext::new();
        let plan = ctx
            .state()
            .statement_to_plan(DfStatement::CreateExternalTable(create))
            .await
            .map_err(|e| SqlError::plan(at, e))?;
        match plan {
            datafusion::logical_expr::LogicalPlan::Ddl(
                datafusion::logical_expr::DdlStatement::CreateExternalTable(cmd),
            ) => Some(Arc::new(cmd.schema.as_arrow().clone())),
            other => {
                return Err(SqlError::Internal(format!(
                    "CREATE EXTERNAL TABLE planned as {}",
                    other.display()
                )));
            }
        }
    };
    let watermark = match options.get("watermark") {
        Some(text) => {
            let spec = WatermarkSpec::parse(text).map_err(|why| {
                options.bad(
                    "watermark",
                    text,
                    &format!("'<column> - INTERVAL ''<n> <unit>''' ({why})"),
                )
            })?;
            if let Some(schema) = &declared_schema
                && schema.field_with_name(&spec.column).is_err()
            {
                return Err(options.bad(
                    "watermark",
                    text,
                    &format!(
                        "a column of the table (it has: {})",
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            Some(spec)
        }
        None => None,
    };
    let table = TableDecl {
        name,
        kind,
        location,
        declared_schema,
        options,
        watermark,
        at,
    };
    // Surface bad trigger options at declaration time, not at first use.
    table.max_rows()?;
    table.max_delay()?;
    Ok(table)
}

fn option_text(value: &Value) -> String {
    match value {
        Value::SingleQuotedString(s)
        | Value::DoubleQuotedString(s)
        | Value::EscapedStringLiteral(s) => s.clone(),
        Value::Number(n, _) => n.clone(),
        other => other.to_string(),
    }
}
