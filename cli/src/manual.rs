//! The hidden `meshward completions SHELL` and `meshward man` commands: shell completion
//! scripts (clap_complete) and the man page meshward(1) (clap_mangen), made from the same clap
//! definitions as the command line, so they never drift from it. The Debian package
//! (packaging/) installs their output.

use std::io::Write;

use clap::CommandFactory as _;

use crate::args::Cli;

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "meshward", &mut script);
    out.write_all(&script)?;
    Ok(())
}

/// Writes the man page meshward(1) as roff: the synopsis, the global options and the
/// subcommands with their summaries (each command's `--help` has its details).
pub fn man(out: &mut dyn Write) -> anyhow::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    out.write_all(&page)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Visible subcommands every output must name.
    const COMMANDS: [&str; 6] = ["run", "init", "join", "status", "backup", "licence"];

    #[test]
    fn each_shell_completes_the_subcommands_and_their_options() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            // Options as fish spells them too (`-l admin-listen`).
            for name in COMMANDS.iter().chain(&["data", "admin-listen", "config"]) {
                assert!(text.contains(name), "{shell}: {name} missing");
            }
        }
    }

    #[test]
    fn the_man_page_names_the_subcommands_and_hides_the_hidden_ones() {
        let mut out = Vec::new();
        man(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(".ie \\n(.g .ds Aq"),
            "not roff: {}",
            &text[..40]
        );
        assert!(text.contains(".TH meshward 1"), "no title");
        for name in COMMANDS {
            assert!(
                text.contains(&format!("meshward\\-{name}")),
                "{name} missing"
            );
        }
        for hidden in ["completions", "openapi", "fault"] {
            assert!(
                !text.contains(&format!("meshward\\-{hidden}")),
                "{hidden} shown"
            );
        }
    }

    #[test]
    fn the_hidden_commands_and_the_config_option_parse() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(["meshward", "completions", "zsh"]).unwrap();
        assert!(matches!(
            cli.command,
            crate::args::Command::Completions {
                shell: clap_complete::Shell::Zsh
            }
        ));
        assert!(Cli::try_parse_from(["meshward", "completions", "tcsh"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["meshward", "man"]).unwrap().command,
            crate::args::Command::Man
        ));
        let cli = Cli::try_parse_from(["meshward", "run", "--config", "/etc/m.toml"]).unwrap();
        let crate::args::Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.options().config, Some("/etc/m.toml".into()));
    }
}
