//! The `gpt1` command line: thin wrappers over the library.

mod cli;

use clap::Parser;
use std::io::Write;

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
    // Die quietly on a closed pipe (`gpt1 score ... | head`), as Unix tools do, instead of
    // panicking in println!.
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A GPU that fails inside a kernel method (out of memory, a fault) stops the run with a
    // panic whose message starts with `FAILURE_PREFIX`: shown as an error line with its fix and
    // exit status 1, like any other error; other panics (bugs) keep Rust's report.
    // A write to standard output or error that fails (a full disk, `> /dev/full`) panics in
    // println!: shown as one error line, exit status 1, instead of a panic report.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg =
            p.downcast_ref::<String>().map(String::as_str).or(p.downcast_ref::<&str>().copied());
        match msg {
            Some(m) if m.starts_with(gpt1::backend::cuda::FAILURE_PREFIX) => {
                eprintln!("error: {m}");
                std::process::exit(1);
            }
            Some(m) if m.starts_with("failed printing to std") => {
                let (stream, why) =
                    m["failed printing to ".len()..].split_once(": ").unwrap_or((m, ""));
                let _ = writeln!(std::io::stderr(), "error: writing to {stream}: {why}");
                std::process::exit(1);
            }
            _ => report(info),
        }
    }));
    let args = cli::Cli::try_parse().unwrap_or_else(|e| {
        // --help, --version or a usage error; a help that cannot be written is an error too.
        if let Err(w) = e.print() {
            eprintln!("error: writing to stdout: {w}");
            std::process::exit(1);
        }
        std::process::exit(e.exit_code())
    });
    let res = cli::run(args).and_then(|()| {
        // What is still buffered: a write that fails here is the command's failure too.
        std::io::stdout().flush().map_err(|e| anyhow::anyhow!("writing to stdout: {e}"))
    });
    if let Err(e) = res {
        let interrupted = e.chain().any(|c| {
            matches!(c.downcast_ref::<gpt1::Error>(), Some(gpt1::Error::Interrupted { .. }))
        });
        eprintln!("error: {}", render(&e));
        // 128 + SIGINT, as shells report a process stopped by Ctrl-C.
        std::process::exit(if interrupted { 130 } else { 1 });
    }
}
