//! Durable files: the one rule by which Gregor replaces small state files (checkpoints,
//! `partition.metadata`, the metadata snapshot) and locks its directories.
//!
//! The rule: a replacement is written to `<name>.tmp`, then renamed over `<name>`, so a reader
//! sees the old file or the new one, never a torn one. [`replace`] makes it durable before it
//! returns: the temp file is fsynced before the rename and the directory after it. Files that
//! are only trusted after a clean shutdown (the leader epoch checkpoint) may use
//! [`replace_deferred`] instead, and must call [`sync`] before they are trusted.
//!
//! Nothing here knows about Kafka; `log` and `meta` both build on it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// fsyncs a directory, so that file creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The temp file a replacement of `path` is written to.
fn temp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn write_temp(path: &Path, bytes: &[u8], fsync: bool) -> io::Result<std::path::PathBuf> {
    let tmp = temp_path(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    if fsync {
        f.sync_all()?;
    }
    Ok(tmp)
}

/// Atomically replaces `path` with `bytes`; durable (file and directory entry) on return.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(path, bytes, true)?;
    std::fs::rename(&tmp, path)?;
    sync_dir(parent(path))
}

/// Atomically replaces `path` with `bytes` without waiting for the disk: after a crash the
/// file may hold the old contents, or (on some file systems) be empty. Only for files that
/// are rebuilt when not trusted; call [`sync`] to make the latest replacement durable.
pub fn replace_deferred(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(path, bytes, false)?;
    std::fs::rename(&tmp, path)
}

/// Makes `path` and its directory entry durable (after [`replace_deferred`]).
pub fn sync(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()?;
    sync_dir(parent(path))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An exclusive lock on `<dir>/<name>`, held while the returned file is open, so that two
/// processes never share a data directory. Fails at once when another process holds it.
/// Its errors name the directory.
pub fn lock_dir(dir: &Path, name: &str) -> io::Result<File> {
    let path = dir.join(name);
    let named = |e: io::Error| io::Error::new(e.kind(), format!("locking {}: {e}", path.display()));
    std::fs::create_dir_all(dir).map_err(named)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(named)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{} is in use by another gregor process", dir.display()),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(named(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_leaves_no_temp_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("checkpoint");
        replace(&path, b"one").expect("replace");
        replace(&path, b"two").expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        replace_deferred(&path, b"three").expect("replace");
        sync(&path).expect("sync");
        assert_eq!(std::fs::read(&path).expect("read"), b"three");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("checkpoint")]);
    }

    #[test]
    fn a_locked_dir_cannot_be_locked_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = lock_dir(dir.path(), ".lock").expect("first lock");
        let second = lock_dir(dir.path(), ".lock").expect_err("second lock");
        assert_eq!(second.kind(), io::ErrorKind::WouldBlock);
        drop(held);
        lock_dir(dir.path(), ".lock").expect("lock after release");
    }
}
