//! Splits a pipeline file into statements, remembering where each starts, so errors can point
//! at "statement 3 (line 12)".

/// One statement's text and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStatement {
    /// The statement without its terminating `;`.
    pub text: String,
    /// 1-based line of the statement's first non-blank character.
    pub line: usize,
}

/// Splits on `;` outside quotes and comments. Empty statements (only whitespace or comments)
/// are dropped.
pub fn split_statements(sql: &str) -> Vec<RawStatement> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                // A doubled quote inside a literal is an escaped quote: the loop re-enters.
                for (_, d) in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek().map(|&(_, d)| d) == Some('-') => {
                for (_, d) in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek().map(|&(_, d)| d) == Some('*') => {
                chars.next();
                let mut prev = ' ';
                for (_, d) in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            ';' => {
                push(sql, start, i, &mut out);
                start = i + 1;
            }
            _ => {}
        }
    }
    push(sql, start, sql.len(), &mut out);
    out
}

fn push(sql: &str, start: usize, end: usize, out: &mut Vec<RawStatement>) {
    let piece = &sql[start..end];
    if !has_code(piece) {
        return;
    }
    let offset = piece.len() - piece.trim_start().len();
    let line = sql[..start + offset].matches('\n').count() + 1;
    out.push(RawStatement {
        text: piece.trim().to_string(),
        line,
    });
}

/// True when the text holds anything but whitespace and comments.
fn has_code(piece: &str) -> bool {
    let mut rest = piece.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            return !rest.is_empty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_outside_quotes_and_comments_with_lines() {
        let sql = "-- header; not a split\nCREATE t OPTIONS ('a' 'x;y');\n\n/* c; */ INSERT INTO t\nSELECT 1;\n-- trailing\n";
        let parts = split_statements(sql);
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert_eq!(parts[0].line, 1);
        assert!(parts[0].text.contains("'x;y'"));
        assert_eq!(parts[1].line, 4);
        assert!(parts[1].text.ends_with("SELECT 1"));
    }

    #[test]
    fn doubled_quotes_stay_inside_literal() {
        let parts = split_statements("SELECT 'it''s; fine'; SELECT 2");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].text, "SELECT 'it''s; fine'");
    }
}
