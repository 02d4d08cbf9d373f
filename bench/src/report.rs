//! How figures are written into `BENCHMARKS.md`: sections, Markdown tables, verdicts and units.
//! Every table of every scenario is rendered here.

use std::time::Duration;

/// Starts a section: its heading and the paragraph that says what was measured against what.
pub fn section(out: &mut String, heading: &str, intro: &str) {
    out.push_str(&format!("## {heading}\n\n"));
    if !intro.is_empty() {
        out.push_str(&format!("{intro}\n\n"));
    }
}

/// A Markdown table, filled row by row and written once.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings.
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row; missing cells are left empty.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    /// Writes the table and a blank line after it.
    pub fn write(&self, out: &mut String) {
        let line = |cells: &[String]| {
            let cells: Vec<&str> =
                (0..self.header.len()).map(|i| cells.get(i).map_or("", String::as_str)).collect();
            format!("| {} |\n", cells.join(" | ")).replace("|  |", "| |")
        };
        out.push_str(&line(&self.header));
        out.push_str(&format!("|{}\n", "---|".repeat(self.header.len())));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out.push('\n');
    }
}

/// A verdict for a figure with a target.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**MISSED**"
    }
}

/// A duration in milliseconds, two decimals.
pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// A byte count in megabytes, one decimal.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_as_markdown_with_empty_cells_filled() {
        let mut out = String::new();
        let mut table = Table::new(&["a", "b", "c"]);
        table.row(["1", "2"]).row(["x", "", "z"]);
        table.write(&mut out);
        assert_eq!(out, "| a | b | c |\n|---|---|---|\n| 1 | 2 | |\n| x | | z |\n\n");
    }
}
