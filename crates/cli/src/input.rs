//! Local input: passwords from stdin or the terminal, and files named on the
//! command line. Passwords never come from arguments (they would show in `ps`
//! and shell history) and are wiped from memory once used.

use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::CliError;

/// Most bytes read from stdin for passwords.
const MAX_STDIN_BYTES: usize = 64 * 1024;

/// Reads stdin whole (bounded) into memory that is wiped when dropped.
pub fn read_stdin() -> anyhow::Result<Zeroizing<String>> {
    // Allocated once at full size so that growing never leaves copies behind.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_STDIN_BYTES + 1));
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::Input(format!("cannot read the password from stdin: {e}")))?;
    if bytes.len() > MAX_STDIN_BYTES {
        return Err(CliError::Input(
            "stdin is larger than 64 KiB: it should hold passwords, one per line".into(),
        )
        .into());
    }
    let bytes = std::mem::take(&mut *bytes);
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            let mut bytes = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut bytes);
            Err(CliError::Input("stdin is not UTF-8 text".into()).into())
        }
    }
}

/// The first `what.len()` lines of `text`, one per password named in `what`
/// (for the messages). A trailing `\r` is dropped (CRLF); nothing else is
/// trimmed, since spaces may belong to a password. Lines beyond are ignored.
pub fn password_lines(text: &str, what: &[&str]) -> Result<Vec<Zeroizing<String>>, CliError> {
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let mut out = Vec::with_capacity(what.len());
    for (i, name) in what.iter().enumerate() {
        let expected = expected_layout(what);
        match lines.next() {
            Some(line) if !line.is_empty() => out.push(Zeroizing::new(line.to_owned())),
            Some(_) => {
                return Err(CliError::Input(format!(
                    "line {} of stdin (the {name}) is empty; {expected}",
                    i + 1
                )));
            }
            None => {
                return Err(CliError::Input(format!(
                    "stdin ends before the {name}; {expected}"
                )));
            }
        }
    }
    Ok(out)
}

fn expected_layout(what: &[&str]) -> String {
    match what {
        [one] => format!("stdin must hold the {one} on its first line"),
        _ => {
            let places = ["first", "second", "third"];
            let parts: Vec<String> = what
                .iter()
                .zip(places)
                .map(|(name, place)| format!("the {name} on the {place} line"))
                .collect();
            format!("stdin must hold {}", parts.join(" and "))
        }
    }
}

/// Asks for a password on the terminal without echoing it.
pub fn prompt(question: &str) -> anyhow::Result<Zeroizing<String>> {
    prompt_secret(question, "--password-stdin", "password")
}

/// Asks for a secret (`what`: password, passphrase) on the terminal without
/// echoing it; `stdin_flag` is the command's way to give it on stdin.
pub fn prompt_secret(
    question: &str,
    stdin_flag: &str,
    what: &str,
) -> anyhow::Result<Zeroizing<String>> {
    let answer = rpassword::prompt_password(question).map_err(|e| {
        CliError::Input(format!(
            "cannot ask for the {what} on the terminal ({e}); pass it on stdin with {stdin_flag}"
        ))
    })?;
    let answer = Zeroizing::new(answer);
    let trimmed = answer.strip_suffix('\r').unwrap_or(&answer);
    if trimmed.is_empty() {
        return Err(CliError::Input(format!("no {what} was entered")).into());
    }
    Ok(Zeroizing::new(trimmed.to_owned()))
}

/// Opens a file named on the command line for reading, refusing what is not
/// a regular file (a FIFO would wait for a writer for ever).
pub fn open_regular_file(path: &Path, what: &str) -> Result<std::fs::File, CliError> {
    let shown = path.display();
    let unreadable =
        |e: std::io::Error| CliError::Input(format!("cannot read the {what} {shown}: {e}"));
    let not_regular = || {
        CliError::Input(format!(
            "the {what} {shown} is not a regular file (a directory, FIFO, socket or device): save it to a file and name that"
        ))
    };
    // Looked at before opening: opening a FIFO waits for a writer, for ever.
    if !std::fs::metadata(path).map_err(unreadable)?.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::File::open(path).map_err(unreadable)?;
    if !file.metadata().map_err(unreadable)?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// Reads a UTF-8 text file named on the command line, refusing what is
/// larger than `max_bytes`. Its content is wiped from memory when dropped
/// (credential files hold secrets).
pub fn read_text_file(
    path: &Path,
    what: &str,
    max_bytes: usize,
) -> anyhow::Result<Zeroizing<String>> {
    let shown = path.display();
    let unreadable =
        |e: std::io::Error| CliError::Input(format!("cannot read the {what} {shown}: {e}"));
    let file = open_regular_file(path, what)?;
    let metadata = file.metadata().map_err(unreadable)?;
    let too_large = || {
        CliError::Input(format!(
            "the {what} {shown} is larger than {}",
            size(max_bytes)
        ))
    };
    if metadata.len() > max_bytes as u64 {
        return Err(too_large().into());
    }
    let capacity = usize::try_from(metadata.len())
        .unwrap_or(max_bytes)
        .min(max_bytes)
        + 1;
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > max_bytes {
        return Err(too_large().into());
    }
    let bytes = std::mem::take(&mut *bytes);
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            let mut bytes = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut bytes);
            Err(CliError::Input(format!("the {what} {shown} is not UTF-8 text")).into())
        }
    }
}

fn size(bytes: usize) -> String {
    if bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGE: &[&str] = &["current password", "new password"];

    #[test]
    fn two_lines_give_current_and_new() {
        let lines = password_lines("old secret\nnew secret 2\n", CHANGE).unwrap();
        assert_eq!(lines[0].as_str(), "old secret");
        assert_eq!(lines[1].as_str(), "new secret 2");
    }

    #[test]
    fn crlf_and_missing_final_newline_are_fine_and_spaces_are_kept() {
        let lines = password_lines("a b \r\n c\r\n", CHANGE).unwrap();
        assert_eq!(lines[0].as_str(), "a b ");
        assert_eq!(lines[1].as_str(), " c");
        let lines = password_lines("one\ntwo", CHANGE).unwrap();
        assert_eq!(lines[1].as_str(), "two");
    }

    #[test]
    fn login_reads_the_first_line_only() {
        let lines = password_lines("pw\nignored\n", &["password"]).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].as_str(), "pw");
    }

    #[test]
    fn missing_or_empty_lines_are_explained_without_echoing_passwords() {
        let err = password_lines("only-one\n", CHANGE)
            .unwrap_err()
            .to_string();
        assert!(err.contains("new password"), "{err}");
        assert!(err.contains("second line"), "{err}");
        assert!(!err.contains("only-one"));
        let err = password_lines("", &["password"]).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        let err = password_lines("\nnew\n", CHANGE).unwrap_err().to_string();
        assert!(err.contains("current password"), "{err}");
    }

    #[test]
    fn files_are_bounded_and_must_be_text() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.csv");
        std::fs::write(&ok, "Access key ID,Secret access key\nAKIA,x\n").unwrap();
        assert!(
            read_text_file(&ok, "CSV file", 1024)
                .unwrap()
                .starts_with("Access key ID")
        );

        let big = dir.path().join("big.csv");
        std::fs::write(&big, vec![b'a'; 2048]).unwrap();
        let err = read_text_file(&big, "CSV file", 1024)
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than 1 KiB"), "{err}");

        let binary = dir.path().join("bin.csv");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        assert!(
            read_text_file(&binary, "CSV file", 1024)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );

        let missing = dir.path().join("missing.csv");
        let err = read_text_file(&missing, "CSV file", 1024).unwrap_err();
        assert!(
            err.to_string().contains("cannot read the CSV file"),
            "{err}"
        );
        assert_eq!(crate::error::exit_code_of(&err), crate::error::EXIT_USAGE);

        assert!(read_text_file(dir.path(), "CSV file", 1024).is_err());
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("credentials.csv");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Opening it would block until a writer came: the read runs apart so
        // a regression fails here instead of hanging the suite.
        let (sender, answer) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = sender.send(
                read_text_file(&path, "CSV file", 1024)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        });
        let err = answer
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO waited for a writer")
            .unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
