//! The session file: the bearer token kept between commands, with the
//! server it belongs to. It is written atomically and readable by its owner
//! only (0600, in a directory created 0700); the token never shows in
//! `Debug`, and the buffers that carry it are wiped.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::CliError;

/// What the session file holds: which server, and the bearer token for it.
#[derive(Serialize, Deserialize)]
struct SessionFileBody {
    url: String,
    token: String,
}

/// A session saved between commands.
pub struct SavedSession {
    pub url: String,
    pub token: SecretString,
}

impl fmt::Debug for SavedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SavedSession")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// `$XDG_CONFIG_HOME/keyhold/session.json`, else `$HOME/.config/keyhold/session.json`.
/// A relative or empty XDG_CONFIG_HOME is ignored, as the XDG specification says.
pub fn default_session_path(
    xdg_config_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let config = xdg_config_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            home.filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(config.join("keyhold").join("session.json"))
}

/// Reads the session file; `None` when there is none.
pub fn load_session(path: &Path) -> anyhow::Result<Option<SavedSession>> {
    let text = match std::fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow::anyhow!(
                "cannot read the session file {}: {e}",
                path.display()
            ));
        }
    };
    let body: SessionFileBody = serde_json::from_slice(&text).map_err(|_| {
        anyhow::anyhow!(
            "the session file {} is damaged: delete it and log in again",
            path.display()
        )
    })?;
    Ok(Some(SavedSession {
        url: body.url,
        token: SecretString::from(body.token),
    }))
}

/// Writes the session file atomically (a private temporary file renamed over
/// it), readable by its owner only (0600), in a directory created 0700.
pub fn save_session(path: &Path, session: &SavedSession) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir)?;
    let file_name = path.file_name().ok_or_else(|| {
        CliError::Input(format!(
            "the session file {} is not a file path",
            path.display()
        ))
    })?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let mut body = SessionFileBody {
        url: session.url.clone(),
        token: session.token.expose_secret().to_owned(),
    };
    let json = serde_json::to_vec(&body).map(Zeroizing::new);
    zeroize::Zeroize::zeroize(&mut body.token);
    let json = json.context("cannot encode the session")?;

    let result = write_private_file(&temp, &json).and_then(|()| {
        std::fs::rename(&temp, path)
            .with_context(|| format!("cannot write the session file {}", path.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Deletes the session file; a missing one is fine.
pub fn remove_session(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "cannot delete the session file {}: {e}",
            path.display()
        )),
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| {
        format!(
            "cannot create the directory {} for the session file",
            dir.display()
        )
    })
}

fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create the session file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The umask may only have removed bits; make the mode exactly 0600.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict the session file {}", path.display()))?;
    }
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the session file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join("nested")
            .join("keyhold")
            .join("session.json");
        let saved = SavedSession {
            url: "http://127.0.0.1:8600".into(),
            token: SecretString::from("tok-1".to_owned()),
        };
        save_session(&path, &saved).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let dir_mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(dir_mode, 0o700);
        }
        let loaded = load_session(&path).unwrap().unwrap();
        assert_eq!(loaded.url, "http://127.0.0.1:8600");
        assert_eq!(loaded.token.expose_secret(), "tok-1");

        // Overwriting keeps the mode and leaves no temporary file behind.
        let again = SavedSession {
            url: "http://127.0.0.1:9000".into(),
            token: SecretString::from("tok-2".to_owned()),
        };
        save_session(&path, &again).unwrap();
        assert_eq!(
            load_session(&path).unwrap().unwrap().token.expose_secret(),
            "tok-2"
        );
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("session.json")]);

        remove_session(&path).unwrap();
        assert!(load_session(&path).unwrap().is_none());
        remove_session(&path).unwrap();
    }

    #[test]
    fn debug_of_a_saved_session_hides_the_token() {
        let saved = SavedSession {
            url: "http://x".into(),
            token: SecretString::from("sekret-token".to_owned()),
        };
        assert!(!format!("{saved:?}").contains("sekret"));
    }

    #[test]
    fn damaged_session_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.json");
        std::fs::write(&path, "not json").unwrap();
        let err = load_session(&path).unwrap_err();
        assert!(err.to_string().contains("log in again"), "{err}");
    }

    #[test]
    fn default_session_path_follows_xdg() {
        assert_eq!(
            default_session_path(Some("/xdg".into()), Some("/home/u".into())),
            Some(PathBuf::from("/xdg/keyhold/session.json"))
        );
        assert_eq!(
            default_session_path(Some("relative".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.config/keyhold/session.json"))
        );
        assert_eq!(
            default_session_path(None, Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.config/keyhold/session.json"))
        );
        assert_eq!(default_session_path(None, None), None);
    }
}
