#!/usr/bin/env bash
# Writes docs/commands.md: every command's --help, as the binary prints it. tests/docs.rs checks
# that the file matches the binary, so rerun this after changing a flag:
#   cargo build --release && tools/make_commands_doc.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/gpt1
out=docs/commands.md
{
  echo "# Command reference"
  echo
  echo "Every command's \`--help\`, as the binary prints it (written by \`tools/make_commands_doc.sh\`;"
  echo "\`tests/docs.rs\` fails when this file and the binary disagree). The README's walkthrough"
  echo "shows them together; \`docs/formats.md\` describes the files they read and write."
  for cmd in "" demo pretrain generate perplexity score finetune evaluate predict export zero-shot \
             "data stats" "data tasks" "tokenizer train" tokenize detokenize prepare plot \
             "analyze layers" "analyze zero-shot" "bench train" "bench finetune" "bench generate" \
             "bench kernels" "bench serve" serve; do
    echo
    echo "## \`gpt1${cmd:+ $cmd}\`"
    echo
    echo '```text'
    # shellcheck disable=SC2086
    $bin $cmd --help
    echo '```'
  done
} > "$out"
echo "wrote $out"
