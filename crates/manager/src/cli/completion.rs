//! `fledge-manager completion bash|zsh|fish|...`: shell completion scripts (clap_complete).

use clap::CommandFactory;

/// Prints the completion script of `shell` on standard output.
pub fn run(shell: clap_complete::Shell) {
    let mut command = super::Cli::command();
    clap_complete::generate(
        shell,
        &mut command,
        "fledge-manager",
        &mut std::io::stdout(),
    );
}
