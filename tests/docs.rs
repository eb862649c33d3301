//! docs/commands.md is every command's `--help` as the binary prints it, and lists every
//! command the binary has: a changed flag without a regenerated reference fails here
//! (`tools/make_commands_doc.sh` rewrites it).

mod common;
use common::ok;

#[test]
fn the_command_reference_matches_the_binary() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/commands.md"),
    )
    .unwrap();
    let mut seen = 0;
    for section in doc.split("\n## `gpt1").skip(1) {
        let cmd = section.split('`').next().unwrap().trim();
        let args: Vec<&str> = cmd.split_whitespace().chain(["--help"]).collect();
        let help = ok(&args);
        let body = section.split("```text\n").nth(1).and_then(|b| b.split("```").next()).unwrap();
        assert_eq!(
            body, help,
            "docs/commands.md is stale for `gpt1 {cmd}`: run tools/make_commands_doc.sh"
        );
        seen += 1;
    }
    // Every top-level command of `gpt1 --help` has its section.
    let top = ok(&["--help"]);
    let commands = top.split("Commands:").nth(1).unwrap().split("Options:").next().unwrap();
    // Command lines are indented by two spaces; wrapped descriptions by more.
    for line in commands.lines().filter(|l| l.starts_with("  ") && !l.starts_with("   ")) {
        let Some(name) = line.split_whitespace().next() else { continue };
        if name == "help" {
            continue;
        }
        assert!(doc.contains(&format!("## `gpt1 {name}")), "docs/commands.md lacks `gpt1 {name}`");
    }
    assert!(seen > 20);
}
