//! What the commands print: aligned tables and field lists for people, or
//! the API's own JSON for scripts (`--output json`).

use std::io::Write;

use serde::Serialize;
use zeroize::Zeroize;

use crate::error::CliError;

/// `--output`: how results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON: an array for lists, one object for single items, fields as in the API.
    Json,
}

/// How one kind of API object shows in tables: a row of a list, and the
/// labelled fields of `show`.
pub trait Tabular {
    fn headers() -> &'static [&'static str];
    fn row(&self) -> Vec<String>;
    fn fields(&self) -> Vec<(&'static str, String)>;
}

/// Prints a list: a table, or a JSON array.
pub fn print_list<T: Tabular + Serialize>(format: OutputFormat, items: &[T]) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => print_json(&items),
        OutputFormat::Table => {
            let mut table = Table::new(T::headers());
            for item in items {
                table.push(item.row());
            }
            emit(&table.render())
        }
    }
}

/// Prints one object: labelled fields, or a JSON object.
pub fn print_item<T: Tabular + Serialize>(format: OutputFormat, item: &T) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => print_json(item),
        OutputFormat::Table => emit(&render_fields(&item.fields())),
    }
}

/// Prints a value as pretty JSON followed by a newline.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    emit(&text)
}

/// Prints a confirmation for people; JSON output stays empty (the exit
/// status says it worked).
pub fn print_done(format: OutputFormat, message: &str) -> anyhow::Result<()> {
    if format == OutputFormat::Table {
        emit(&format!("{}\n", clean(message)))?;
    }
    Ok(())
}

/// Writes to stdout. A reader that went away (`keyhold audit list | head`)
/// ends the command quietly instead of failing.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// An error writing to stdout: quiet success when the reader has gone.
pub fn stdout_error(error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::Reported(0).into()
    } else {
        anyhow::anyhow!("cannot write to stdout: {error}")
    }
}

/// A table of aligned columns. Its cells are wiped when it is dropped, since
/// some (one-time passwords) are secret.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Columns separated by two spaces, each as wide as its widest cell; no
    /// trailing spaces. Control characters in cells are neutralised.
    pub fn render(&self) -> String {
        let columns = self
            .headers
            .len()
            .max(self.rows.iter().map(Vec::len).max().unwrap_or(0));
        let lines: Vec<Vec<String>> = std::iter::once(&self.headers)
            .chain(self.rows.iter())
            .map(|row| {
                (0..columns)
                    .map(|i| clean(row.get(i).map_or("", String::as_str)))
                    .collect()
            })
            .collect();
        let mut widths = vec![0usize; columns];
        for line in &lines {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in lines {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(text.trim_end());
            out.push('\n');
            text.zeroize();
        }
        out
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        for cell in self.rows.iter_mut().flatten() {
            cell.zeroize();
        }
    }
}

/// `Label:  value` lines with the values aligned.
pub fn render_fields(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (label, value) in fields {
        let label = format!("{label}:");
        let line = format!("{label:<w$}  {}", clean(value), w = width + 1);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Text from the server made safe for a terminal: line breaks and tabs
/// become spaces, other control characters (escape sequences) become `?`.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// An optional value, `-` when absent or empty.
pub fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => "-".to_owned(),
    }
}

pub fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// An RFC 3339 time as `2026-11-29 12:00:00` (UTC), or as given when it does not parse.
pub fn time(raw: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(raw) {
        Ok(t) => t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => raw.to_owned(),
    }
}

/// An optional RFC 3339 time, `-` when absent.
pub fn opt_time(raw: Option<&str>) -> String {
    raw.map_or_else(|| "-".to_owned(), time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let mut table = Table::new(&["Name", "Role", "Locked"]);
        table.push(vec!["Admin1".into(), "administrator".into(), "no".into()]);
        table.push(vec!["bo".into(), "auditor".into(), "yes".into()]);
        assert_eq!(
            table.render(),
            "Name    Role           Locked\n\
             Admin1  administrator  no\n\
             bo      auditor        yes\n"
        );
    }

    #[test]
    fn empty_table_prints_its_header_and_short_rows_are_padded() {
        assert_eq!(Table::new(&["A", "B"]).render(), "A  B\n");
        let mut table = Table::new(&["A", "B", "C"]);
        table.push(vec!["x".into()]);
        assert_eq!(table.render(), "A  B  C\nx\n");
    }

    #[test]
    fn table_counts_characters_not_bytes_and_neutralises_escapes() {
        let mut table = Table::new(&["Validity", "State"]);
        table.push(vec!["a – b".into(), "ok".into()]);
        table.push(vec!["evil\x1b[2Jline\nbreak".into(), "x".into()]);
        let text = table.render();
        assert!(!text.contains('\x1b'));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        // The widest cell has 18 characters; "a – b" has 5 (and 7 bytes).
        assert_eq!(lines[1], format!("a – b{}ok", " ".repeat(13 + 2)));
        assert_eq!(lines[2], "evil?[2Jline break  x");
    }

    #[test]
    fn fields_are_aligned() {
        let text = render_fields(&[
            ("Name", "g".into()),
            ("Active key ID", "-".into()),
            ("Notes", String::new()),
        ]);
        assert_eq!(text, "Name:           g\nActive key ID:  -\nNotes:\n");
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(time("2026-11-29T12:00:00Z"), "2026-11-29 12:00:00");
        assert_eq!(time("2026-11-29T13:00:00+01:00"), "2026-11-29 12:00:00");
        assert_eq!(time("soon"), "soon");
        assert_eq!(opt_time(None), "-");
    }
}
