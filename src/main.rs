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
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>();
        match msg.filter(|m| m.starts_with(gpt1::backend::cuda::FAILURE_PREFIX)) {
            Some(m) => {
                eprintln!("error: {m}");
                std::process::exit(1);
            }
            None => report(info),
        }
    }));
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        let interrupted = e.chain().any(|c| {
            matches!(c.downcast_ref::<gpt1::Error>(), Some(gpt1::Error::Interrupted { .. }))
        });
        eprintln!("error: {}", render(&e));
        // 128 + SIGINT, as shells report a process stopped by Ctrl-C.
        std::process::exit(if interrupted { 130 } else { 1 });
    }
}
