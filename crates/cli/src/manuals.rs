//! `keyhold completions SHELL` and `keyhold manpages --dir DIR`: shell
//! completions and man pages generated from the command definition itself,
//! so they never fall behind the flags (packagers run them at build time).

use std::path::Path;

use clap::CommandFactory;

use crate::error::CliError;

/// Prints the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut command = crate::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "keyhold", &mut script);
    crate::output::emit(&String::from_utf8_lossy(&script))?;
    Ok(())
}

/// Writes `keyhold.1` and one page per subcommand (`keyhold-audit-verify.1`)
/// into `dir`, which must exist; prints how many.
pub fn manpages(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(CliError::Input(format!(
            "--dir {} is not a directory: create it first (for example: mkdir -p {})",
            dir.display(),
            dir.display()
        ))
        .into());
    }
    clap_mangen::generate_to(crate::Cli::command(), dir).map_err(|e| {
        CliError::Input(format!(
            "cannot write man pages into {}: {e}",
            dir.display()
        ))
    })?;
    let written = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
        .count();
    eprintln!("Wrote {written} man pages into {}.", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_loads_the_completions_and_they_know_every_command() {
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut crate::Cli::command(),
            "keyhold",
            &mut script,
        );
        let script = String::from_utf8(script).unwrap();
        for word in [
            "audit",
            "checkpoint",
            "public-key",
            "--export",
            "group",
            "rotate",
            "drift",
            "reconcile",
            "--self-heal",
            "--drift-check-hours",
        ] {
            assert!(script.contains(word), "{word}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyhold.bash");
        std::fs::write(&file, &script).unwrap();
        let loaded = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p keyhold", file.display()))
            .output()
            .unwrap();
        assert!(
            loaded.status.success(),
            "{}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        assert!(String::from_utf8_lossy(&loaded.stdout).contains("keyhold"));
    }

    #[test]
    fn a_man_page_for_every_command_and_none_without_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        manpages(dir.path()).unwrap();
        for page in [
            "keyhold.1",
            "keyhold-audit-verify.1",
            "keyhold-group-create.1",
            "keyhold-drift-reconcile.1",
        ] {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
            assert!(
                text.starts_with(".ie") || text.contains(".TH"),
                "{page}: {text}"
            );
        }
        let verify = std::fs::read_to_string(dir.path().join("keyhold-audit-verify.1")).unwrap();
        assert!(verify.contains("public\\-key"), "{verify}");
        let missing = dir.path().join("missing");
        let err = manpages(&missing).unwrap_err().to_string();
        assert!(err.contains("mkdir -p"), "{err}");
        assert!(!missing.exists());
    }
}
