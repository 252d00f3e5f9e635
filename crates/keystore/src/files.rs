//! File handling for the keystore directory: private modes, no-clobber atomic
//! writes, and reads that refuse files others can see.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use keyhold_core::error::KeystoreError;
use zeroize::Zeroizing;

use crate::seal::fill_random;

const PRIVATE_DIR_MODE: u32 = 0o700;
const PRIVATE_FILE_MODE: u32 = 0o600;
const GROUP_OR_OTHER: u32 = 0o077;

pub(crate) fn io_error(action: &str, path: &Path, error: io::Error) -> KeystoreError {
    KeystoreError::Unavailable(format!("cannot {action} {}: {error}", path.display()))
}

/// Creates `dir` with mode 0700, or narrows an existing one to 0700: the
/// keystore directory is the keystore's alone.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), KeystoreError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| io_error("create", parent, e))?;
    }
    match DirBuilder::new().mode(PRIVATE_DIR_MODE).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::metadata(dir).map_err(|e| io_error("inspect", dir, e))?;
            if !meta.is_dir() {
                return Err(KeystoreError::Unavailable(format!(
                    "{} exists and is not a directory",
                    dir.display()
                )));
            }
            if meta.permissions().mode() & GROUP_OR_OTHER != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
                    .map_err(|e| io_error("restrict the mode of", dir, e))?;
            }
            Ok(())
        }
        Err(e) => Err(io_error("create", dir, e)),
    }
}

/// Writes a new file with mode 0600, atomically and durably, and never over an
/// existing file: losing the master key to an overwrite would lose every key.
///
/// The content goes to a temporary file that is fsynced and then hard-linked to
/// its name; the link fails if the name is taken, which a rename would not.
pub(crate) fn write_new_file(dir: &Path, name: &str, contents: &[u8]) -> Result<(), KeystoreError> {
    let target = dir.join(name);
    let mut suffix = [0u8; 8];
    fill_random(&mut suffix)?;
    let temp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));

    let written = write_synced(&temp, contents).map_err(|e| io_error("write", &temp, e));
    let linked = written.and_then(|()| {
        fs::hard_link(&temp, &target).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                KeystoreError::Unavailable(format!(
                    "{} already exists; refusing to overwrite it",
                    target.display()
                ))
            } else {
                io_error("create", &target, e)
            }
        })
    });
    // The temporary name is never needed again, whatever happened.
    let _ = fs::remove_file(&temp);
    linked?;
    sync_dir(dir)
}

fn write_synced(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes the new directory entries durable, not only the file contents.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), KeystoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync", dir, e))
}

/// Reads a small file into zeroized memory. With `private`, refuses a file whose
/// mode lets group or others read it (checked on the open file, not the path).
pub(crate) fn read_small_file(
    path: &Path,
    max_len: usize,
    private: bool,
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let file = File::open(path).map_err(|e| io_error("open", path, e))?;
    let meta = file.metadata().map_err(|e| io_error("inspect", path, e))?;
    if !meta.is_file() {
        return Err(KeystoreError::Unavailable(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if private && mode & GROUP_OR_OTHER != 0 {
        return Err(KeystoreError::Unavailable(format!(
            "{} is accessible by group or others (mode {mode:04o}); run `chmod 600 {}` and start again",
            path.display(),
            path.display()
        )));
    }
    // One byte more than allowed, so an oversized file is detected rather than truncated.
    let mut contents = Zeroizing::new(Vec::with_capacity(max_len + 1));
    file.take(max_len as u64 + 1)
        .read_to_end(&mut contents)
        .map_err(|e| io_error("read", path, e))?;
    if contents.len() > max_len {
        return Err(KeystoreError::Unavailable(format!(
            "{} is larger than a keystore file can be ({max_len} bytes)",
            path.display()
        )));
    }
    Ok(contents)
}
