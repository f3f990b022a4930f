//! What the CLI prints: aligned text tables for people, JSON for scripts (hand-written, with
//! proper string escaping), chosen per command by `--json`.

use std::fmt;

pub use sluice_client::Json;

/// A text table: a header row and left-aligned columns two spaces apart.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Reports what a delete command removed (`deleted KIND NAME` lines or a JSON array of
/// `{KIND: NAME}`), then fails with every failure, one per line, if there were any.
pub fn report_deleted(
    kind: &'static str,
    deleted: &[String],
    failures: &[String],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let items = deleted
            .iter()
            .map(|name| Json::object([(kind, Json::str(name))]))
            .collect();
        println!("{}", Json::Array(items));
    } else {
        for name in deleted {
            println!("deleted {kind} {name}");
        }
    }
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("\n"));
    }
    Ok(())
}
