//! The `gpt1` command line: thin wrappers over the library.

mod cli;

use clap::Parser;

/// The error chain on one line; a library setting is shown as the flag that sets it
/// (`max_len` → `--max-len`).
fn render(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e
        .chain()
        .map(|c| match c.downcast_ref::<gpt1::Error>() {
            Some(gpt1::Error::Setting { setting, msg }) => {
                format!("--{} {msg}", setting.replace('_', "-"))
            }
            _ => c.to_string(),
        })
        .collect();
    // Joined as anyhow's `{:#}` joins them.
    parts.join(": ")
}

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {}", render(&e));
        std::process::exit(1);
    }
}
