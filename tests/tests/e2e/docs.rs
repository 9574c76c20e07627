//! The reference in `docs/reference` against what the code accepts: every option of every
//! `STORED AS` kind and of `CREATE MODEL` (from the option registries), every flag of every
//! command (from the binary's own `--help`), every generator's columns with their types, and
//! every function Volley registers. A row documenting an option no kind takes fails too.

use std::collections::BTreeSet;
use std::path::PathBuf;

use volley_connectors::ConnectorRegistry;
use volley_connectors::generator::{GeneratorStream, NexmarkTable};
use volley_connectors::types::sql_type_name;
use volley_sql::table::KindCatalog;
use volley_sql::{COMMON_OPTIONS, OptionSpec};

use crate::process::volley_command;

fn page(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/reference")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text under `## heading` up to the next `## `.
fn section<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    let start = text.find(&format!("\n## {heading}\n"))? + heading.len() + 5;
    let rest = &text[start..];
    Some(rest.find("\n## ").map_or(rest, |end| &rest[..end]))
}

/// The names in the first column of `section`'s tables (`` | `name` | ``), the flags' names
/// without their value (`--max-rows N` → `--max-rows`).
fn documented(section: &str) -> BTreeSet<String> {
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| name.split(' ').next().unwrap_or(name).to_string())
        .collect()
}

/// The row of `section` documenting `name`.
fn row<'a>(section: &'a str, name: &str) -> Option<&'a str> {
    section
        .lines()
        .find(|line| line.starts_with(&format!("| `{name}`")))
}

fn names(specs: &[OptionSpec]) -> BTreeSet<String> {
    specs.iter().map(|s| s.name.to_string()).collect()
}

fn must_document(what: &str, wanted: &BTreeSet<String>, found: &BTreeSet<String>) -> Vec<String> {
    wanted
        .difference(found)
        .map(|name| format!("{what}: `{name}` is accepted but not documented"))
        .collect()
}

#[test]
fn the_reference_documents_every_option_flag_generator_and_function() {
    let mut missing = Vec::new();

    // Tables: the options every kind takes, then each kind's own.
    let tables = page("tables.md");
    let common = section(&tables, "Options every table takes").expect("a common options section");
    missing.extend(must_document(
        "tables.md, options every table takes",
        &names(COMMON_OPTIONS),
        &documented(common),
    ));
    let registry = ConnectorRegistry::builtin();
    for kind in registry.kinds() {
        let Some(text) = section(&tables, kind) else {
            missing.push(format!("tables.md: no section `## {kind}`"));
            continue;
        };
        let own = names(registry.kind_options(kind).unwrap_or_default());
        let found = documented(text);
        missing.extend(must_document(&format!("tables.md, {kind}"), &own, &found));
        for extra in found.difference(&own) {
            missing.push(format!(
                "tables.md, {kind}: `{extra}` is documented but {kind} does not take it"
            ));
        }
    }

    // Models.
    let models = page("models.md");
    let options = section(&models, "Options").expect("an options section in models.md");
    missing.extend(must_document(
        "models.md",
        &names(volley_sql::model::MODEL_OPTIONS),
        &documented(options),
    ));

    // Every flag of every command, as the binary itself lists them.
    let cli = page("cli.md");
    let help = |args: &[&str]| {
        let out = volley_command().args(args).output().unwrap();
        assert!(out.status.success(), "volley {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    };
    let top = help(&["--help"]);
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect();
    assert!(commands.len() >= 4, "{top}");
    for command in commands {
        let Some(text) = section(&cli, &format!("volley {command}")) else {
            missing.push(format!("cli.md: no section `## volley {command}`"));
            continue;
        };
        let flags: BTreeSet<String> = help(&[command.as_str(), "--help"])
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| w.trim_end_matches(['.', ')', ';', '`']).to_string())
            .filter(|w| w != "--help" && w != "--version")
            .filter(|w| w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .collect();
        missing.extend(must_document(
            &format!("cli.md, volley {command}"),
            &flags,
            &documented(text),
        ));
    }

    // Generators: every column, its SQL type and whether it is NOT NULL.
    let generators = page("generators.md");
    let streams = GeneratorStream::ALL
        .iter()
        .map(|(name, stream)| (name.to_string(), *stream))
        .chain(
            NexmarkTable::ALL
                .iter()
                .map(|(name, table)| (name.to_string(), GeneratorStream::Nexmark(*table))),
        );
    for (name, stream) in streams {
        let Some(text) = section(&generators, &name) else {
            missing.push(format!("generators.md: no section `## {name}`"));
            continue;
        };
        for field in stream.schema().fields() {
            let Some(line) = row(text, field.name()) else {
                missing.push(format!(
                    "generators.md, {name}: column `{}` is not documented",
                    field.name()
                ));
                continue;
            };
            let sql = sql_type_name(field.data_type());
            let not_null = if field.is_nullable() { "" } else { " NOT NULL" };
            if !line.contains(&format!("`{sql}{not_null}`")) {
                missing.push(format!(
                    "generators.md, {name}: column `{}` is `{sql}{not_null}`: {line}",
                    field.name()
                ));
            }
        }
    }

    // Functions.
    let functions = documented(&page("functions.md"));
    for udf in volley_udfs::all_udfs() {
        let name = udf.name().to_string();
        if !functions
            .iter()
            .any(|f| f.split('(').next() == Some(name.as_str()))
        {
            missing.push(format!("functions.md: `{name}` is not documented"));
        }
    }

    // Metrics: every name `/metrics` can expose, with its type, and none it cannot.
    let metrics = page("metrics.md");
    let exposed = volley_metrics::prometheus::exposed_names();
    for (name, kind) in &exposed {
        match metrics
            .lines()
            .find(|line| line.starts_with(&format!("| `{name}` |")))
        {
            None => missing.push(format!("metrics.md: `{name}` is not documented")),
            Some(line) if !line.contains(&format!("| {kind} |")) => {
                missing.push(format!("metrics.md: `{name}` is a {kind}: {line}"));
            }
            Some(_) => {}
        }
    }
    for name in documented(&metrics) {
        if name.starts_with("volley_") && !exposed.iter().any(|(n, _)| *n == name) {
            missing.push(format!(
                "metrics.md: `{name}` is documented but never exposed"
            ));
        }
    }

    assert!(
        missing.is_empty(),
        "the reference (docs/reference) is behind the code:\n{}",
        missing.join("\n")
    );
}
