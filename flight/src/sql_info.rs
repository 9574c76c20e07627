//! Volley's answer to Flight SQL `GetSqlInfo`: what the server is and which SQL it speaks.
//!
//! Generic tools read these keys before anything else (JDBC's `DatabaseMetaData` in DBeaver
//! or Tableau, the Flight SQL ODBC driver's `SQLGetInfo`) and fail or guess on a missing one,
//! so [`sql_info_data`] answers every [`SqlInfo`] key, each with what this read-only
//! DataFusion server really does. What DataFusion decides (its scalar functions, its casts,
//! its reserved words, how it folds identifiers and sorts nulls) is read from DataFusion when
//! the answer is built, so an upgrade cannot leave it stale; the tests run the SQL behind the
//! other claims.
//!
//! Value types follow what clients read where the protocol's comments say otherwise: the
//! JDBC driver reads `SQL_DEFAULT_TRANSACTION_ISOLATION` as a 64-bit integer and reads
//! `SQL_OUTER_JOINS_SUPPORT_LEVEL`, like the `SQL_SUPPORTED_*` keys, as a bitmask of enum
//! values; the ODBC driver reads the identifier-case and null-ordering keys as 64-bit
//! integers. Arrow Java's server-side `SqlInfoBuilder` writes the case keys, the default
//! isolation and the outer-join level the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;

use arrow::compute::can_cast_types;
use arrow::datatypes::{
    DECIMAL_DEFAULT_SCALE, DECIMAL128_MAX_PRECISION, DataType, IntervalUnit, TimeUnit,
};
use arrow::error::ArrowError;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    SqlInfo, SqlNullOrdering, SqlOuterJoinsSupportLevel, SqlSupportedCaseSensitivity,
    SqlSupportedGroupBy, SqlSupportedResultSetConcurrency, SqlSupportedResultSetType,
    SqlSupportedSubqueries, SqlSupportedTransaction, SqlSupportedUnions, SqlSupportsConvert,
    SqlTransactionIsolationLevel, SupportedSqlGrammar,
};
use datafusion::config::SqlParserOptions;
use datafusion::logical_expr::ScalarUDF;
use datafusion::logical_expr::scalar_doc_sections::{
    DOC_SECTION_BINARY_STRING, DOC_SECTION_DATETIME, DOC_SECTION_HASHING, DOC_SECTION_MATH,
    DOC_SECTION_REGEX, DOC_SECTION_STRING,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::planner::NullOrdering;
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect};
use datafusion::sql::sqlparser::keywords::{
    ALL_KEYWORDS, ALL_KEYWORDS_INDEX, Keyword, RESERVED_FOR_COLUMN_ALIAS, RESERVED_FOR_IDENTIFIER,
    RESERVED_FOR_TABLE_ALIAS, RESERVED_FOR_TABLE_FACTOR,
};

/// The SQL:2003 reserved words (ISO/IEC 9075-2:2003, 5.2), as MySQL Connector/J lists them.
/// JDBC's `getSQLKeywords` lists a database's keywords that are *not* among these: clients
/// know these already.
#[rustfmt::skip]
const SQL_2003_KEYWORDS: &[&str] = &[
    "ABS", "ALL", "ALLOCATE", "ALTER", "AND", "ANY", "ARE", "ARRAY", "AS", "ASENSITIVE",
    "ASYMMETRIC", "AT", "ATOMIC", "AUTHORIZATION", "AVG", "BEGIN", "BETWEEN", "BIGINT",
    "BINARY", "BLOB", "BOOLEAN", "BOTH", "BY", "CALL", "CALLED", "CARDINALITY", "CASCADED",
    "CASE", "CAST", "CEIL", "CEILING", "CHAR", "CHARACTER", "CHARACTER_LENGTH", "CHAR_LENGTH",
    "CHECK", "CLOB", "CLOSE", "COALESCE", "COLLATE", "COLLECT", "COLUMN", "COMMIT",
    "CONDITION", "CONNECT", "CONSTRAINT", "CONVERT", "CORR", "CORRESPONDING", "COUNT",
    "COVAR_POP", "COVAR_SAMP", "CREATE", "CROSS", "CUBE", "CUME_DIST", "CURRENT",
    "CURRENT_DATE", "CURRENT_DEFAULT_TRANSFORM_GROUP", "CURRENT_PATH", "CURRENT_ROLE",
    "CURRENT_TIME", "CURRENT_TIMESTAMP", "CURRENT_TRANSFORM_GROUP_FOR_TYPE", "CURRENT_USER",
    "CURSOR", "CYCLE", "DATE", "DAY", "DEALLOCATE", "DEC", "DECIMAL", "DECLARE", "DEFAULT",
    "DELETE", "DENSE_RANK", "DEREF", "DESCRIBE", "DETERMINISTIC", "DISCONNECT", "DISTINCT",
    "DOUBLE", "DROP", "DYNAMIC", "EACH", "ELEMENT", "ELSE", "END", "END-EXEC", "ESCAPE",
    "EVERY", "EXCEPT", "EXEC", "EXECUTE", "EXISTS", "EXP", "EXTERNAL", "EXTRACT", "FALSE",
    "FETCH", "FILTER", "FLOAT", "FLOOR", "FOR", "FOREIGN", "FREE", "FROM", "FULL", "FUNCTION",
    "FUSION", "GET", "GLOBAL", "GRANT", "GROUP", "GROUPING", "HAVING", "HOLD", "HOUR",
    "IDENTITY", "IN", "INDICATOR", "INNER", "INOUT", "INSENSITIVE", "INSERT", "INT", "INTEGER",
    "INTERSECT", "INTERSECTION", "INTERVAL", "INTO", "IS", "JOIN", "LANGUAGE", "LARGE",
    "LATERAL", "LEADING", "LEFT", "LIKE", "LN", "LOCAL", "LOCALTIME", "LOCALTIMESTAMP", "LOWER",
    "MATCH", "MAX", "MEMBER", "MERGE", "METHOD", "MIN", "MINUTE", "MOD", "MODIFIES", "MODULE",
    "MONTH", "MULTISET", "NATIONAL", "NATURAL", "NCHAR", "NCLOB", "NEW", "NO", "NONE",
    "NORMALIZE", "NOT", "NULL", "NULLIF", "NUMERIC", "OCTET_LENGTH", "OF", "OLD", "ON", "ONLY",
    "OPEN", "OR", "ORDER", "OUT", "OUTER", "OVER", "OVERLAPS", "OVERLAY", "PARAMETER",
    "PARTITION", "PERCENTILE_CONT", "PERCENTILE_DISC", "PERCENT_RANK", "POSITION", "POWER",
    "PRECISION", "PREPARE", "PRIMARY", "PROCEDURE", "RANGE", "RANK", "READS", "REAL",
    "RECURSIVE", "REF", "REFERENCES", "REFERENCING", "REGR_AVGX", "REGR_AVGY", "REGR_COUNT",
    "REGR_INTERCEPT", "REGR_R2", "REGR_SLOPE", "REGR_SXX", "REGR_SXY", "REGR_SYY", "RELEASE",
    "RESULT", "RETURN", "RETURNS", "REVOKE", "RIGHT", "ROLLBACK", "ROLLUP", "ROW", "ROWS",
    "ROW_NUMBER", "SAVEPOINT", "SCOPE", "SCROLL", "SEARCH", "SECOND", "SELECT", "SENSITIVE",
    "SESSION_USER", "SET", "SIMILAR", "SMALLINT", "SOME", "SPECIFIC", "SPECIFICTYPE", "SQL",
    "SQLEXCEPTION", "SQLSTATE", "SQLWARNING", "SQRT", "START", "STATIC", "STDDEV_POP",
    "STDDEV_SAMP", "SUBMULTISET", "SUBSTRING", "SUM", "SYMMETRIC", "SYSTEM", "SYSTEM_USER",
    "TABLE", "TABLESAMPLE", "THEN", "TIME", "TIMESTAMP", "TIMEZONE_HOUR", "TIMEZONE_MINUTE",
    "TO", "TRAILING", "TRANSLATE", "TRANSLATION", "TREAT", "TRIGGER", "TRIM", "TRUE", "UESCAPE",
    "UNION", "UNIQUE", "UNKNOWN", "UNNEST", "UPDATE", "UPPER", "USER", "USING", "VALUE",
    "VALUES", "VARCHAR", "VARYING", "VAR_POP", "VAR_SAMP", "WHEN", "WHENEVER", "WHERE",
    "WIDTH_BUCKET", "WINDOW", "WITH", "WITHIN", "WITHOUT", "YEAR",
];

/// `SupportedAnsi92SqlGrammarLevel::ANSI92_ENTRY_SQL`, which arrow-flight does not re-export.
const ANSI92_ENTRY_SQL: i32 = 0;

/// Functions DataFusion plans from SQL syntax rather than looking up by name (`EXTRACT(YEAR
/// FROM ts)` is `date_part`), with the list each belongs in.
const SYNTAX_FUNCTIONS: &[(&str, Functions)] = &[("EXTRACT", Functions::Datetime)];

/// The SqlInfo keys the Arrow JDBC driver's `DatabaseMetaData` reads (arrow-java's
/// `ArrowDatabaseMetadata.java`), for the test that every one is answered.
#[cfg(test)]
pub(super) const JDBC_KEYS: &[SqlInfo] = &[
    SqlInfo::FlightSqlServerName,
    SqlInfo::FlightSqlServerVersion,
    SqlInfo::SqlIdentifierQuoteChar,
    SqlInfo::FlightSqlServerReadOnly,
    SqlInfo::SqlKeywords,
    SqlInfo::SqlNumericFunctions,
    SqlInfo::SqlStringFunctions,
    SqlInfo::SqlSystemFunctions,
    SqlInfo::SqlDatetimeFunctions,
    SqlInfo::SqlSearchStringEscape,
    SqlInfo::SqlExtraNameCharacters,
    SqlInfo::SqlSupportsColumnAliasing,
    SqlInfo::SqlNullPlusNullIsNull,
    SqlInfo::SqlSupportsConvert,
    SqlInfo::SqlSupportsTableCorrelationNames,
    SqlInfo::SqlSupportsDifferentTableCorrelationNames,
    SqlInfo::SqlSupportsExpressionsInOrderBy,
    SqlInfo::SqlSupportsOrderByUnrelated,
    SqlInfo::SqlSupportedGroupBy,
    SqlInfo::SqlSupportsLikeEscapeClause,
    SqlInfo::SqlSupportsNonNullableColumns,
    SqlInfo::SqlSupportedGrammar,
    SqlInfo::SqlAnsi92SupportedLevel,
    SqlInfo::SqlSupportsIntegrityEnhancementFacility,
    SqlInfo::SqlOuterJoinsSupportLevel,
    SqlInfo::SqlSchemaTerm,
    SqlInfo::SqlProcedureTerm,
    SqlInfo::SqlCatalogTerm,
    SqlInfo::SqlCatalogAtStart,
    SqlInfo::SqlSchemasSupportedActions,
    SqlInfo::SqlCatalogsSupportedActions,
    SqlInfo::SqlSupportedPositionedCommands,
    SqlInfo::SqlSupportedResultSetTypes,
    SqlInfo::SqlSelectForUpdateSupported,
    SqlInfo::SqlStoredProceduresSupported,
    SqlInfo::SqlSupportedSubqueries,
    SqlInfo::SqlCorrelatedSubqueriesSupported,
    SqlInfo::SqlSupportedUnions,
    SqlInfo::SqlMaxBinaryLiteralLength,
    SqlInfo::SqlMaxCharLiteralLength,
    SqlInfo::SqlMaxColumnNameLength,
    SqlInfo::SqlMaxColumnsInGroupBy,
    SqlInfo::SqlMaxColumnsInIndex,
    SqlInfo::SqlMaxColumnsInOrderBy,
    SqlInfo::SqlMaxColumnsInSelect,
    SqlInfo::SqlMaxColumnsInTable,
    SqlInfo::SqlMaxConnections,
    SqlInfo::SqlMaxCursorNameLength,
    SqlInfo::SqlMaxIndexLength,
    SqlInfo::SqlDbSchemaNameLength,
    SqlInfo::SqlMaxProcedureNameLength,
    SqlInfo::SqlMaxCatalogNameLength,
    SqlInfo::SqlMaxRowSize,
    SqlInfo::SqlMaxRowSizeIncludesBlobs,
    SqlInfo::SqlMaxStatementLength,
    SqlInfo::SqlMaxStatements,
    SqlInfo::SqlMaxTableNameLength,
    SqlInfo::SqlMaxTablesInSelect,
    SqlInfo::SqlMaxUsernameLength,
    SqlInfo::SqlDefaultTransactionIsolation,
    SqlInfo::SqlTransactionsSupported,
    SqlInfo::SqlSupportedTransactionsIsolationLevels,
    SqlInfo::SqlDataDefinitionCausesTransactionCommit,
    SqlInfo::SqlDataDefinitionsInTransactionsIgnored,
    SqlInfo::SqlBatchUpdatesSupported,
    SqlInfo::SqlSavepointsSupported,
    SqlInfo::SqlNamedParametersSupported,
    SqlInfo::SqlLocatorsUpdateCopy,
    SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported,
];

/// The four function lists of `GetSqlInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Functions {
    /// `SQL_NUMERIC_FUNCTIONS`.
    Numeric,
    /// `SQL_STRING_FUNCTIONS`.
    String,
    /// `SQL_DATETIME_FUNCTIONS`.
    Datetime,
    /// `SQL_SYSTEM_FUNCTIONS`: every other scalar function (conditional, array, struct, map,
    /// Arrow type functions, Volley's own), so that none goes unlisted.
    System,
}

impl Functions {
    /// The list `udf` belongs in, by the section of DataFusion's documentation it is in.
    fn of(udf: &ScalarUDF) -> Self {
        let Some(docs) = udf.documentation() else {
            // Volley's undocumented UDFs: `canonical_float` and `infinite_as_nan` map floats
            // to floats; `predict` runs a model.
            return match udf.name() {
                "canonical_float" | "infinite_as_nan" => Self::Numeric,
                _ => Self::System,
            };
        };
        let label = docs.doc_section.label;
        if label == DOC_SECTION_MATH.label {
            Self::Numeric
        } else if [
            DOC_SECTION_STRING.label,
            DOC_SECTION_BINARY_STRING.label,
            DOC_SECTION_REGEX.label,
            DOC_SECTION_HASHING.label,
        ]
        .contains(&label)
        {
            Self::String
        } else if label == DOC_SECTION_DATETIME.label {
            Self::Datetime
        } else {
            Self::System
        }
    }
}

/// The bitmask Flight SQL encodes a set of enum values as: bit `v` for each value `v`.
fn bits(values: &[i32]) -> i32 {
    values.iter().fold(0, |mask, value| mask | (1 << value))
}

/// `FlightError` as the [`ArrowError`] callers expect.
fn arrow_error(error: FlightError) -> ArrowError {
    match error {
        FlightError::Arrow(error) => error,
        other => ArrowError::ExternalError(Box::new(other)),
    }
}

/// Every key Volley answers: all of [`SqlInfo`], each with what this read-only DataFusion
/// server does. The scalar functions are those of a DataFusion context with Volley's UDFs;
/// the casts, keywords, identifier folding and null ordering are DataFusion's defaults,
/// which the query engine runs with. Build it once and keep it: it builds a context.
///
/// # Errors
/// When the batch cannot be built, or DataFusion's null-ordering setting is not one Flight
/// SQL can describe.
pub(super) fn sql_info_data() -> Result<SqlInfoData, ArrowError> {
    let ctx = SessionContext::new();
    volley_udfs::register_all(&ctx);
    let state = ctx.state();
    let parser = &state.config_options().sql_parser;

    let mut b = SqlInfoDataBuilder::new();
    server(&mut b);
    names(&mut b, parser)?;
    functions(&mut b, state.scalar_functions().iter());
    queries(&mut b, parser);
    limits(&mut b);
    transactions(&mut b);
    b.build().map_err(arrow_error)
}

/// What the server is and does beside SQL.
fn server(b: &mut SqlInfoDataBuilder) {
    b.append(SqlInfo::FlightSqlServerName, "Volley");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, arrow::ARROW_VERSION);
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    // "Null if Substrait is not supported": a dense-union value cannot be null, so empty.
    b.append(SqlInfo::FlightSqlServerSubstraitMinVersion, "");
    b.append(SqlInfo::FlightSqlServerSubstraitMaxVersion, "");
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    // No CancelQuery / CancelFlightInfo: a query ends when its stream is dropped.
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    // Prepared statement handles do not time out (the oldest is forgotten past a cap).
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0_i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0_i32);

    // Definitions: DataFusion has CREATE and DROP, but the server refuses all DDL.
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    // Every table `GetTables` lists, a caller let in may query.
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
}

/// How names are written: identifiers, keywords, null ordering, patterns.
///
/// # Errors
/// When `parser`'s null ordering is not one DataFusion knows.
fn names(b: &mut SqlInfoDataBuilder, parser: &SqlParserOptions) -> Result<(), ArrowError> {
    // Identifiers: unquoted ones are folded to lower case; quoted ones are kept as written
    // and compared case-sensitively, which Flight SQL has no value for but "unknown", and
    // the ODBC driver reads "unknown" as SQL_IC_SENSITIVE, exactly that.
    let unquoted = if parser.enable_ident_normalization {
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase
    } else {
        SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown
    };
    b.append(SqlInfo::SqlIdentifierCase, i64::from(unquoted as i32));
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        i64::from(SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32),
    );
    // Beyond a-z, A-Z, 0-9 and _ (and any Unicode letter), what the parser takes in a name.
    let dialect = GenericDialect {};
    let extra: String = ('!'..='~')
        .filter(|c| !c.is_ascii_alphanumeric() && *c != '_' && dialect.is_identifier_part(*c))
        .collect();
    b.append(SqlInfo::SqlExtraNameCharacters, extra.as_str());
    b.append(SqlInfo::SqlKeywords, keywords());

    let null_ordering = NullOrdering::from_str(&parser.default_null_ordering)
        .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
    let nulls = match null_ordering {
        NullOrdering::NullsMax => SqlNullOrdering::SqlNullsSortedHigh,
        NullOrdering::NullsMin => SqlNullOrdering::SqlNullsSortedLow,
        NullOrdering::NullsFirst => SqlNullOrdering::SqlNullsSortedAtStart,
        NullOrdering::NullsLast => SqlNullOrdering::SqlNullsSortedAtEnd,
    };
    b.append(SqlInfo::SqlNullOrdering, i64::from(nulls as i32));
    // `GetTables`' patterns are matched by Arrow's LIKE, whose escape is a backslash.
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    Ok(())
}

/// The four function lists, from `udfs` (name and function, aliases included) and
/// [`SYNTAX_FUNCTIONS`]: each name in one list, upper case, sorted.
fn functions<'a>(
    b: &mut SqlInfoDataBuilder,
    udfs: impl Iterator<Item = (&'a String, &'a Arc<ScalarUDF>)>,
) {
    let mut lists: BTreeMap<Functions, BTreeSet<String>> = BTreeMap::new();
    for (name, udf) in udfs {
        // Names are case-insensitive (unquoted, they are folded); clients match upper case.
        lists
            .entry(Functions::of(udf))
            .or_default()
            .insert(name.to_ascii_uppercase());
    }
    for &(name, kind) in SYNTAX_FUNCTIONS {
        lists.entry(kind).or_default().insert(name.to_owned());
    }
    for (key, kind) in [
        (SqlInfo::SqlNumericFunctions, Functions::Numeric),
        (SqlInfo::SqlStringFunctions, Functions::String),
        (SqlInfo::SqlSystemFunctions, Functions::System),
        (SqlInfo::SqlDatetimeFunctions, Functions::Datetime),
    ] {
        let names: Vec<String> = lists
            .remove(&kind)
            .unwrap_or_default()
            .into_iter()
            .collect();
        b.append(key, names);
    }
}

/// Which queries DataFusion runs.
fn queries(b: &mut SqlInfoDataBuilder, parser: &SqlParserOptions) {
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    // `'a' || NULL` is NULL.
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(
        SqlInfo::SqlSupportsConvert,
        supported_casts(parser.map_string_types_to_utf8view),
    );
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    // `FROM t AS t` is allowed: aliases need not differ from table names.
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(
        SqlInfo::SqlSupportedGroupBy,
        bits(&[
            SqlSupportedGroupBy::SqlGroupByUnrelated as i32,
            SqlSupportedGroupBy::SqlGroupByBeyondSelect as i32,
        ]),
    );
    // DataFusion's ESCAPE takes only the backslash, which LIKE escapes with anyway: a client
    // told "yes" writes `ESCAPE '!'` and fails.
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, false);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    // ODBC's minimum and core grammars (the full SELECT, subqueries, set functions); not the
    // extended one, which adds positioned UPDATE/DELETE, SELECT FOR UPDATE and procedures.
    b.append(
        SqlInfo::SqlSupportedGrammar,
        bits(&[
            SupportedSqlGrammar::SqlMinimumGrammar as i32,
            SupportedSqlGrammar::SqlCoreGrammar as i32,
        ]),
    );
    // Entry level: intermediate SQL-92 adds domains, character sets and ALTER TABLE.
    b.append(SqlInfo::SqlAnsi92SupportedLevel, bits(&[ANSI92_ENTRY_SQL]));
    // No enforced constraints, no foreign keys.
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    // LEFT, RIGHT and FULL OUTER JOIN, nested too. A bitmask, as JDBC and ODBC read it.
    b.append(
        SqlInfo::SqlOuterJoinsSupportLevel,
        bits(&[
            SqlOuterJoinsSupportLevel::SqlLimitedOuterJoins as i32,
            SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
        ]),
    );
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    // `catalog.schema.table`.
    b.append(SqlInfo::SqlCatalogAtStart, true);
    // No procedures, indexes or privileges to name a schema or catalog in.
    b.append(SqlInfo::SqlSchemasSupportedActions, 0_i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0_i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0_i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(
        SqlInfo::SqlSupportedSubqueries,
        bits(&[
            SqlSupportedSubqueries::SqlSubqueriesInComparisons as i32,
            SqlSupportedSubqueries::SqlSubqueriesInExists as i32,
            SqlSupportedSubqueries::SqlSubqueriesInIns as i32,
            SqlSupportedSubqueries::SqlSubqueriesInQuantifieds as i32,
        ]),
    );
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(
        SqlInfo::SqlSupportedUnions,
        bits(&[
            SqlSupportedUnions::SqlUnion as i32,
            SqlSupportedUnions::SqlUnionAll as i32,
        ]),
    );
}

/// Limits: DataFusion sets none of them; 0 is "no limit or not known".
fn limits(b: &mut SqlInfoDataBuilder) {
    for limit in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnNameLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxConnections,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlDbSchemaNameLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxCatalogNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatementLength,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTableNameLength,
        SqlInfo::SqlMaxTablesInSelect,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        b.append(limit, 0_i64);
    }
    // No row size limit, so none that leaves large values out.
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, true);
}

/// Transactions (none: every query reads one published snapshot) and result sets.
fn transactions(b: &mut SqlInfoDataBuilder) {
    b.append(
        SqlInfo::SqlDefaultTransactionIsolation,
        i64::from(SqlTransactionIsolationLevel::SqlTransactionNone as i32),
    );
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(
        SqlInfo::SqlSupportedTransactionsIsolationLevels,
        bits(&[SqlTransactionIsolationLevel::SqlTransactionNone as i32]),
    );
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, false);

    // Results stream forward, read-only.
    b.append(
        SqlInfo::SqlSupportedResultSetTypes,
        bits(&[SqlSupportedResultSetType::SqlResultSetTypeForwardOnly as i32]),
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        0_i32,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        bits(&[SqlSupportedResultSetConcurrency::SqlResultSetConcurrencyReadOnly as i32]),
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        0_i32,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
        0_i32,
    );
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    // No callable statements, so no named parameters in them.
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    // No LOB locators.
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
}

/// The words DataFusion's parser reserves (they cannot be a bare alias or name: quote them)
/// that SQL:2003 does not, upper case, sorted.
fn keywords() -> Vec<String> {
    let reserved: BTreeSet<&Keyword> = RESERVED_FOR_TABLE_ALIAS
        .iter()
        .chain(RESERVED_FOR_COLUMN_ALIAS)
        .chain(RESERVED_FOR_TABLE_FACTOR)
        .chain(RESERVED_FOR_IDENTIFIER)
        .collect();
    let words: BTreeSet<String> = ALL_KEYWORDS_INDEX
        .iter()
        .zip(ALL_KEYWORDS)
        .filter(|(keyword, _)| reserved.contains(keyword))
        .map(|(_, word)| word.to_ascii_uppercase())
        .filter(|word| !SQL_2003_KEYWORDS.contains(&word.as_str()))
        .collect();
    words.into_iter().collect()
}

/// The Arrow type DataFusion gives `convert`'s SQL type; string types are `Utf8View` when
/// `utf8view` (`datafusion.sql_parser.map_string_types_to_utf8view`).
///
/// `BINARY`/`VARBINARY` are DataFusion's `BYTEA`, `BIT` its `BOOLEAN`, both interval kinds its
/// one `INTERVAL`, and the long types Arrow's large ones (`arrow_cast(x, 'LargeUtf8')`).
fn arrow_type(convert: SqlSupportsConvert, utf8view: bool) -> DataType {
    let string = if utf8view {
        DataType::Utf8View
    } else {
        DataType::Utf8
    };
    let decimal = DataType::Decimal128(DECIMAL128_MAX_PRECISION, DECIMAL_DEFAULT_SCALE);
    match convert {
        SqlSupportsConvert::SqlConvertBigint => DataType::Int64,
        SqlSupportsConvert::SqlConvertBinary | SqlSupportsConvert::SqlConvertVarbinary => {
            DataType::Binary
        }
        SqlSupportsConvert::SqlConvertBit => DataType::Boolean,
        SqlSupportsConvert::SqlConvertChar | SqlSupportsConvert::SqlConvertVarchar => string,
        SqlSupportsConvert::SqlConvertDate => DataType::Date32,
        SqlSupportsConvert::SqlConvertDecimal | SqlSupportsConvert::SqlConvertNumeric => decimal,
        SqlSupportsConvert::SqlConvertFloat | SqlSupportsConvert::SqlConvertReal => {
            DataType::Float32
        }
        SqlSupportsConvert::SqlConvertInteger => DataType::Int32,
        SqlSupportsConvert::SqlConvertIntervalDayTime
        | SqlSupportsConvert::SqlConvertIntervalYearMonth => {
            DataType::Interval(IntervalUnit::MonthDayNano)
        }
        SqlSupportsConvert::SqlConvertLongvarbinary => DataType::LargeBinary,
        SqlSupportsConvert::SqlConvertLongvarchar => DataType::LargeUtf8,
        SqlSupportsConvert::SqlConvertSmallint => DataType::Int16,
        SqlSupportsConvert::SqlConvertTime => DataType::Time64(TimeUnit::Nanosecond),
        SqlSupportsConvert::SqlConvertTimestamp => DataType::Timestamp(TimeUnit::Nanosecond, None),
        SqlSupportsConvert::SqlConvertTinyint => DataType::Int8,
    }
}

/// Every `SqlSupportsConvert` value, in order.
fn convert_types() -> impl Iterator<Item = SqlSupportsConvert> {
    (0..).map_while(|value| SqlSupportsConvert::try_from(value).ok())
}

/// For each SQL type, the SQL types DataFusion's `CAST` takes it to: Arrow's cast kernel,
/// which DataFusion plans every scalar `CAST` with, between the types DataFusion gives them.
fn supported_casts(utf8view: bool) -> BTreeMap<i32, Vec<i32>> {
    convert_types()
        .map(|from| {
            let from_type = arrow_type(from, utf8view);
            let to = convert_types()
                .filter(|to| can_cast_types(&from_type, &arrow_type(*to, utf8view)))
                .map(|to| to as i32)
                .collect();
            (from as i32, to)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, RecordBatch, new_null_array};
    use arrow::datatypes::{Field, Schema, UInt32Type};
    use datafusion::config::Dialect as ConfigDialect;
    use datafusion::datasource::MemTable;

    use super::*;

    /// Every key of the `SqlInfo` enum.
    fn all_keys() -> Vec<SqlInfo> {
        (0..=1000)
            .filter_map(|i| SqlInfo::try_from(i).ok())
            .collect()
    }

    /// The value `key` is answered with (the union's child), as a one-row array.
    fn value(data: &SqlInfoData, key: SqlInfo) -> Arc<dyn Array> {
        let batch = data.record_batch([key as u32]).unwrap();
        assert_eq!(batch.num_rows(), 1, "{key:?}");
        let union = batch.column(1).as_union();
        let child = union.type_id(0);
        let offset = union.value_offset(0);
        union.child(child).slice(offset, 1)
    }

    fn strings(data: &SqlInfoData, key: SqlInfo) -> Vec<String> {
        let list = value(data, key);
        let list = list.as_list::<i32>();
        list.value(0)
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap().to_owned())
            .collect()
    }

    fn string(data: &SqlInfoData, key: SqlInfo) -> String {
        value(data, key).as_string::<i32>().value(0).to_owned()
    }

    fn bigint(data: &SqlInfoData, key: SqlInfo) -> i64 {
        value(data, key)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    }

    #[test]
    fn every_key_is_answered_once() {
        let data = sql_info_data().unwrap();
        let keys = all_keys();
        assert_eq!(keys.len(), 91);
        let batch = data.record_batch(keys.iter().map(|k| *k as u32)).unwrap();
        assert_eq!(batch.num_rows(), keys.len());
        let names = batch.column(0).as_primitive::<UInt32Type>();
        let mut answered: Vec<u32> = names.iter().map(Option::unwrap).collect();
        answered.dedup();
        assert_eq!(answered, keys.iter().map(|k| *k as u32).collect::<Vec<_>>());
        // No key beyond the enum.
        assert_eq!(data.record_batch([]).unwrap().num_rows(), keys.len());
        for key in keys {
            assert_eq!(data.record_batch([key as u32]).unwrap().num_rows(), 1);
        }
    }

    #[test]
    fn every_jdbc_key_is_answered() {
        let data = sql_info_data().unwrap();
        let batch = data
            .record_batch(JDBC_KEYS.iter().map(|k| *k as u32))
            .unwrap();
        assert_eq!(batch.num_rows(), JDBC_KEYS.len());
        assert_eq!(JDBC_KEYS.len(), 69);
    }

    /// The union child each key is sent as: what the JDBC driver casts it to (`Long` for
    /// lengths and the default isolation, `Integer` for bitmasks) and the ODBC driver reads.
    #[test]
    fn values_have_the_types_clients_read() {
        let data = sql_info_data().unwrap();
        let child = |key: SqlInfo| value(&data, key).data_type().clone();
        for key in [
            SqlInfo::SqlIdentifierCase,
            SqlInfo::SqlQuotedIdentifierCase,
            SqlInfo::SqlNullOrdering,
            SqlInfo::SqlDefaultTransactionIsolation,
            SqlInfo::SqlMaxColumnNameLength,
            SqlInfo::SqlMaxStatements,
        ] {
            assert_eq!(child(key), DataType::Int64, "{key:?}");
        }
        for key in [
            SqlInfo::FlightSqlServerTransaction,
            SqlInfo::FlightSqlServerStatementTimeout,
            SqlInfo::SqlSupportedGroupBy,
            SqlInfo::SqlOuterJoinsSupportLevel,
            SqlInfo::SqlSupportedSubqueries,
            SqlInfo::SqlSupportedUnions,
            SqlInfo::SqlSupportedTransactionsIsolationLevels,
            SqlInfo::SqlSupportedResultSetTypes,
        ] {
            assert_eq!(child(key), DataType::Int32, "{key:?}");
        }
        assert_eq!(string(&data, SqlInfo::FlightSqlServerName), "Volley");
        assert_eq!(string(&data, SqlInfo::SqlIdentifierQuoteChar), "\"");
        assert_eq!(
            string(&data, SqlInfo::FlightSqlServerArrowVersion),
            arrow::ARROW_VERSION
        );
        assert_eq!(
            bigint(&data, SqlInfo::SqlIdentifierCase),
            SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i64
        );
        assert_eq!(
            bigint(&data, SqlInfo::SqlNullOrdering),
            SqlNullOrdering::SqlNullsSortedHigh as i64
        );
        assert_eq!(string(&data, SqlInfo::SqlExtraNameCharacters), "#$@");
    }

    #[test]
    fn function_lists_hold_every_scalar_function_once() {
        let data = sql_info_data().unwrap();
        let lists = [
            SqlInfo::SqlNumericFunctions,
            SqlInfo::SqlStringFunctions,
            SqlInfo::SqlSystemFunctions,
            SqlInfo::SqlDatetimeFunctions,
        ]
        .map(|key| strings(&data, key));
        let all: Vec<&String> = lists.iter().flatten().collect();
        let unique: BTreeSet<&String> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "a function in two lists");

        let ctx = SessionContext::new();
        volley_udfs::register_all(&ctx);
        let registered: BTreeSet<String> = ctx
            .state()
            .scalar_functions()
            .keys()
            .map(|k| k.to_ascii_uppercase())
            .chain(SYNTAX_FUNCTIONS.iter().map(|(name, _)| (*name).to_owned()))
            .collect();
        assert_eq!(
            unique.into_iter().cloned().collect::<BTreeSet<_>>(),
            registered
        );

        let [numeric, string, system, datetime] = lists;
        for f in ["ABS", "SQRT", "ROUND", "POWER", "CANONICAL_FLOAT"] {
            assert!(numeric.contains(&f.to_owned()), "{f}");
        }
        for f in ["UPPER", "SUBSTRING", "MD5", "REGEXP_REPLACE", "CONCAT"] {
            assert!(string.contains(&f.to_owned()), "{f}");
        }
        for f in ["NOW", "DATE_TRUNC", "EXTRACT", "TUMBLE", "CURRENT_DATE"] {
            assert!(datetime.contains(&f.to_owned()), "{f}");
        }
        for f in ["COALESCE", "NULLIF", "ARROW_TYPEOF", "GEOHASH", "PREDICT"] {
            assert!(system.contains(&f.to_owned()), "{f}");
        }
    }

    #[test]
    fn keywords_are_reserved_words_beyond_sql_2003() {
        let data = sql_info_data().unwrap();
        let words = strings(&data, SqlInfo::SqlKeywords);
        for w in ["LIMIT", "OFFSET", "QUALIFY", "EXPLAIN", "STRUCT"] {
            assert!(words.contains(&w.to_owned()), "{w}");
        }
        for w in ["SELECT", "FROM", "WHERE", "TRIM", "INTERVAL"] {
            assert!(!words.contains(&w.to_owned()), "{w}");
        }
        assert!(words.windows(2).all(|w| w[0] < w[1]));
    }

    /// The defaults this module describes are the ones it reads; the dialect is the one its
    /// name characters come from.
    #[test]
    fn parser_defaults_are_the_described_ones() {
        let ctx = SessionContext::new();
        let state = ctx.state();
        let parser = &state.config_options().sql_parser;
        assert_eq!(parser.dialect, ConfigDialect::Generic);
        assert!(parser.enable_ident_normalization);
        assert_eq!(parser.default_null_ordering, "nulls_max");
    }

    /// A context over `t(a BIGINT, b BIGINT, s VARCHAR)` with a few rows, one `a` null.
    async fn context() -> SessionContext {
        let ctx = SessionContext::new();
        volley_udfs::register_all(&ctx);
        let sql = "CREATE TABLE t AS SELECT * \
                   FROM (VALUES (1, 10, 'x'), (2, 20, 'y'), (NULL, 30, 'z')) v(a, b, s)";
        ctx.sql(sql).await.unwrap().collect().await.unwrap();
        ctx
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, String> {
        match ctx.sql(sql).await {
            Ok(frame) => frame.collect().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn one_bool(ctx: &SessionContext, sql: &str) -> bool {
        let batches = rows(ctx, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        batches[0].column(0).as_boolean().value(0)
    }

    /// Each "yes" the SQL info gives about queries is a query DataFusion runs.
    #[tokio::test]
    async fn claimed_query_features_run() {
        let ctx = context().await;
        for sql in [
            // Column aliasing; table correlation names, the same as the table's too.
            "SELECT a AS x FROM t",
            "SELECT x.a FROM t AS x",
            "SELECT t.a FROM t AS t",
            // Expressions in ORDER BY; ORDER BY and GROUP BY columns not selected.
            "SELECT a FROM t ORDER BY a + b",
            "SELECT a FROM t ORDER BY b",
            "SELECT count(*) FROM t GROUP BY b",
            "SELECT a, count(*) FROM t GROUP BY a, b",
            // Outer joins, full and nested.
            "SELECT * FROM t l LEFT JOIN t r ON l.a = r.a",
            "SELECT * FROM t l RIGHT JOIN t r ON l.a = r.a",
            "SELECT * FROM t l FULL OUTER JOIN t r ON l.a = r.a",
            "SELECT * FROM t x LEFT JOIN (t y FULL JOIN t z ON y.a = z.a) ON x.a = y.a",
            // Subqueries: comparison, EXISTS, IN, quantified, correlated.
            "SELECT a FROM t WHERE b > (SELECT min(b) FROM t)",
            "SELECT a FROM t WHERE EXISTS (SELECT 1 FROM t u WHERE u.b = t.b)",
            "SELECT a FROM t WHERE a IN (SELECT a FROM t)",
            "SELECT a FROM t WHERE b > ANY (SELECT b FROM t)",
            "SELECT a FROM t WHERE b >= ALL (SELECT b FROM t)",
            "SELECT a, (SELECT max(u.b) FROM t u WHERE u.a = t.a) FROM t",
            // UNION and UNION ALL.
            "SELECT a FROM t UNION SELECT b FROM t",
            "SELECT a FROM t UNION ALL SELECT b FROM t",
            // A catalog first in a qualified name.
            "SELECT a FROM datafusion.public.t",
            // Unquoted names are folded; the extra name characters are names' characters.
            "SELECT A FROM T",
            "SELECT 1 AS a#b, 2 AS c$d, 3 AS e@f",
            // Functions that are syntax.
            "SELECT EXTRACT(YEAR FROM DATE '2024-05-01')",
        ] {
            rows(&ctx, sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        // Quoted names are case-sensitive.
        assert!(rows(&ctx, "SELECT \"A\" FROM t").await.is_err());
        // NULL concatenated is NULL.
        assert!(one_bool(&ctx, "SELECT ('x' || NULL) IS NULL").await);
        // ESCAPE takes no character but the backslash (so no LIKE escape clause is claimed);
        // a backslash escapes `_` in LIKE, with ESCAPE or without.
        assert!(
            rows(&ctx, "SELECT 'a%' LIKE 'a!%' ESCAPE '!'")
                .await
                .is_err()
        );
        assert!(one_bool(&ctx, "SELECT 'a%' LIKE 'a\\%' ESCAPE '\\'").await);
        assert!(one_bool(&ctx, "SELECT 'a_b' LIKE 'a\\_b'").await);
        assert!(!one_bool(&ctx, "SELECT 'axb' LIKE 'a\\_b'").await);
        // Nulls sort high: last ascending, first descending.
        let asc = rows(&ctx, "SELECT a FROM t ORDER BY a").await.unwrap();
        assert!(asc[0].column(0).is_null(asc[0].num_rows() - 1));
        let desc = rows(&ctx, "SELECT a FROM t ORDER BY a DESC").await.unwrap();
        assert!(desc[0].column(0).is_null(0));
        // The extra characters are taken into the name.
        let names = rows(&ctx, "SELECT 1 AS a#b, 2 AS c$d, 3 AS e@f")
            .await
            .unwrap();
        let schema = names[0].schema();
        let fields: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(fields, ["a#b", "c$d", "e@f"]);
    }

    /// How `SELECT` writes a cast of column `c` to `to`: `CAST` where DataFusion has a name
    /// for the type, `arrow_cast` for Arrow's large types.
    fn cast_sql(column: &str, to: SqlSupportsConvert) -> String {
        let name = match to {
            SqlSupportsConvert::SqlConvertBigint => "BIGINT",
            SqlSupportsConvert::SqlConvertBinary | SqlSupportsConvert::SqlConvertVarbinary => {
                "BYTEA"
            }
            SqlSupportsConvert::SqlConvertBit => "BOOLEAN",
            SqlSupportsConvert::SqlConvertChar => "CHAR",
            SqlSupportsConvert::SqlConvertDate => "DATE",
            SqlSupportsConvert::SqlConvertDecimal => "DECIMAL",
            SqlSupportsConvert::SqlConvertFloat => "FLOAT",
            SqlSupportsConvert::SqlConvertInteger => "INTEGER",
            SqlSupportsConvert::SqlConvertIntervalDayTime
            | SqlSupportsConvert::SqlConvertIntervalYearMonth => "INTERVAL",
            SqlSupportsConvert::SqlConvertLongvarbinary => {
                return format!("arrow_cast({column}, 'LargeBinary')");
            }
            SqlSupportsConvert::SqlConvertLongvarchar => {
                return format!("arrow_cast({column}, 'LargeUtf8')");
            }
            SqlSupportsConvert::SqlConvertNumeric => "NUMERIC",
            SqlSupportsConvert::SqlConvertReal => "REAL",
            SqlSupportsConvert::SqlConvertSmallint => "SMALLINT",
            SqlSupportsConvert::SqlConvertTime => "TIME",
            SqlSupportsConvert::SqlConvertTimestamp => "TIMESTAMP",
            SqlSupportsConvert::SqlConvertTinyint => "TINYINT",
            SqlSupportsConvert::SqlConvertVarchar => "VARCHAR",
        };
        format!("CAST({column} AS {name})")
    }

    /// The conversion map is exactly the casts DataFusion plans and runs, and each SQL type
    /// name gives the Arrow type the map was computed for.
    #[tokio::test]
    async fn conversions_are_datafusion_casts() {
        let data = sql_info_data().unwrap();
        let map = value(&data, SqlInfo::SqlSupportsConvert);
        let map = map.as_map();
        let mut claimed: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        let entries = map.value(0);
        let keys = entries
            .column(0)
            .as_primitive::<arrow::datatypes::Int32Type>();
        let values = entries.column(1).as_list::<i32>();
        for i in 0..entries.len() {
            let to = values.value(i);
            let to = to.as_primitive::<arrow::datatypes::Int32Type>();
            claimed.insert(keys.value(i), to.values().to_vec());
        }
        assert_eq!(claimed.len(), convert_types().count());

        let ctx = SessionContext::new();
        volley_udfs::register_all(&ctx);
        let columns: Vec<SqlSupportsConvert> = convert_types().collect();
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(format!("c{}", *c as i32), arrow_type(*c, true), true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let arrays = schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), 1))
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).unwrap();
        ctx.register_table(
            "types",
            Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
        )
        .unwrap();

        for from in &columns {
            let column = format!("c{}", *from as i32);
            for to in &columns {
                let sql = format!("SELECT {} FROM types", cast_sql(&column, *to));
                let result = rows(&ctx, &sql).await;
                let claims = claimed[&(*from as i32)].contains(&(*to as i32));
                assert_eq!(result.is_ok(), claims, "{sql}: {result:?}");
                if let Ok(batches) = result {
                    assert_eq!(
                        batches[0].column(0).data_type(),
                        &arrow_type(*to, true),
                        "{sql}"
                    );
                }
            }
        }
        // Every type converts to itself and to VARCHAR.
        for from in &columns {
            let to = &claimed[&(*from as i32)];
            assert!(to.contains(&(*from as i32)), "{from:?}");
            assert!(
                to.contains(&(SqlSupportsConvert::SqlConvertVarchar as i32)),
                "{from:?}"
            );
        }
    }
}
