//! The Python and Node clients against a plain HTTP client in their own language.

use std::path::Path;

use crate::measure::SECRET;
use crate::report::{section, verdict, Table};
use crate::server::{Server, Storage};

/// The Python and Node clients, one caller each, against a plain HTTP client in their language.
pub fn language_clients(binary: &Path, root: &Path, out: &mut String) {
    let server = Server::lockserver(binary, SECRET, &Storage::Memory);
    section(
        out,
        "Python and Node clients, one caller each",
        "Acquire+release cycles per second (memory storage), 3 s each, against a plain client in the same language making the same calls.",
    );
    let mut table = Table::new(&["client", "ours", "plain", "ratio", "aim"]);
    let python = root.join("target/venv/bin/python");
    let runs = [
        (
            "Python (plain: requests, new connection per call)",
            python.clone(),
            root.join("bench/clients/py_cycles.py"),
            "plain_requests",
            "python3 -m venv target/venv && target/venv/bin/pip install requests ./client-py",
        ),
        (
            "Node (plain: fetch)",
            "node".into(),
            root.join("bench/clients/js_cycles.js"),
            "plain_fetch",
            "cd client-js && npm install && npm run build",
        ),
    ];
    for (label, program, script, plain_key, setup) in runs {
        let output =
            std::process::Command::new(&program).arg(&script).args([&server.addr, SECRET, "3"]).output();
        let figures = output
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
        match figures {
            Some(f) => {
                let ratio = f["ratio"].as_f64().unwrap_or(0.0);
                table.row([
                    label.to_string(),
                    f["ours"].to_string(),
                    f[plain_key].to_string(),
                    format!("{ratio:.2}"),
                    format!(">= 2x: {}", verdict(ratio >= 2.0)),
                ]);
            }
            None => {
                table.row([label.to_string(), format!("not run: set it up first with `{setup}`")]);
            }
        }
    }
    table.write(out);
}
