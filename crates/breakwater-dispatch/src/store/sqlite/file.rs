//! The store's file: one `serve` at a time on it, however it is named, and
//! still the file its path names while the service runs.
//!
//! A lock on a file named after the store's path (`<store>.lock`) let a
//! second service through a symbolic or a hard link: two names, one file.
//! The lock is taken on the database file itself (`flock`, which SQLite's
//! own `fcntl` locks do not touch), so every name of the file shares it.
//!
//! A store file deleted (or replaced) under a running service goes on
//! taking writes into a file no name reaches: everything would be lost at
//! the next start. [`StoreFile::check`] compares the open file with what the
//! path names now; the engine checks before answering an event, and every
//! second.

use std::fs::File;
use std::path::{Path, PathBuf};

/// The database file, held open to be locked and checked.
#[derive(Debug)]
pub struct StoreFile {
    path: PathBuf,
    file: File,
}

impl StoreFile {
    /// Opens (creating it when missing) the database file at `path`.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or created.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Takes the one-service lock on the file (released when this is
    /// dropped, or the process ends, however it ends).
    ///
    /// # Errors
    ///
    /// When another process holds it (the message names that process where
    /// the system says which), or locking fails.
    pub fn lock(&self) -> Result<(), String> {
        match self.file.try_lock() {
            Ok(()) => Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "another breakwater serve{} is running on the store {}; run one instance per \
                 store file (a link to the file is the same file)",
                holder(&self.file)
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default(),
                self.path.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("locking {}: {e}", self.path.display()))
            }
        }
    }

    /// Whether the path still names the open file.
    ///
    /// # Errors
    ///
    /// A message saying what happened to it: deleted, or replaced by
    /// another file.
    pub fn check(&self) -> Result<(), String> {
        identity_check(&self.path, &self.file)
    }
}

#[cfg(unix)]
fn identity_check(path: &Path, file: &File) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let open = file
        .metadata()
        .map_err(|e| format!("the store file {} cannot be read: {e}", path.display()))?;
    if open.nlink() == 0 {
        return Err(format!(
            "the store file {} was deleted while the service runs: nothing more is taken \
             (it would be lost); restore the file or restart the service",
            path.display()
        ));
    }
    match std::fs::metadata(path) {
        Ok(now) if now.dev() == open.dev() && now.ino() == open.ino() => Ok(()),
        Ok(_) => Err(format!(
            "the store file {} was replaced by another file while the service runs: nothing \
             more is taken; put the file back or restart the service",
            path.display()
        )),
        Err(e) => Err(format!(
            "the store file {} is gone ({e}) while the service runs: nothing more is taken \
             (it would be lost); restore the file or restart the service",
            path.display()
        )),
    }
}

#[cfg(not(unix))]
fn identity_check(_path: &Path, _file: &File) -> Result<(), String> {
    Ok(())
}

/// Which process holds `file`'s `flock`, from `/proc/locks` (Linux), as
/// `pid N: its command line`.
#[cfg(unix)]
fn holder(file: &File) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid: u32 = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&id.as_str()))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })?;
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|c| {
            String::from_utf8_lossy(&c)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty());
    Some(match command {
        Some(c) => format!("pid {pid}: {c}"),
        None => format!("pid {pid}"),
    })
}

#[cfg(not(unix))]
fn holder(_file: &File) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_through_a_symbolic_or_a_hard_link_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let first = StoreFile::open(&path).unwrap();
        first.lock().unwrap();
        let soft = dir.path().join("soft.db");
        let hard = dir.path().join("hard.db");
        std::os::unix::fs::symlink(&path, &soft).unwrap();
        std::fs::hard_link(&path, &hard).unwrap();
        for other in [&path, &soft, &hard] {
            let second = StoreFile::open(other).unwrap();
            let err = second.lock().unwrap_err();
            assert!(err.contains("another breakwater serve"), "{err}");
            assert!(
                err.contains(&format!("pid {}", std::process::id())),
                "{err}"
            );
        }
        drop(first);
        StoreFile::open(&hard).unwrap().lock().unwrap();
    }

    #[test]
    fn a_deleted_or_replaced_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let file = StoreFile::open(&path).unwrap();
        file.check().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(file.check().unwrap_err().contains("deleted"));
        let file = StoreFile::open(&path).unwrap();
        std::fs::rename(&path, dir.path().join("old.db")).unwrap();
        std::fs::write(&path, b"").unwrap();
        assert!(file.check().unwrap_err().contains("replaced"));
        let dir_gone = tempfile::tempdir().unwrap();
        let path = dir_gone.path().join("s.db");
        let file = StoreFile::open(&path).unwrap();
        drop(dir_gone);
        assert!(file.check().is_err(), "its directory removed");
    }
}
