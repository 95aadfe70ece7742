//! Writing files so that nobody ever sees half of one, and a set of files all or nothing:
//! every file is written to a temporary file in its destination's directory, then all are
//! renamed into place. If anything fails, the files already renamed are put back (the ones
//! they replaced are restored), the temporary files and the directories made for them are
//! removed, and the destination is left as it was.

use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempPath};

use crate::error::{DriverError, Result};

/// Files written but not yet in place. Dropping it without [`Staged::commit`] removes them.
#[derive(Default)]
pub struct Staged {
    files: Vec<(PathBuf, NamedTempFile)>,
    /// Directories made for the files, parents first.
    made_dirs: Vec<PathBuf>,
}

fn write_error(path: &Path) -> impl Fn(String) -> DriverError + '_ {
    move |reason| DriverError::Write { path: path.to_path_buf(), reason }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl Staged {
    pub fn new() -> Staged {
        Staged::default()
    }

    /// Writes a temporary file next to `path` with `write`.
    pub fn add(&mut self, path: &Path, write: impl FnOnce(&mut std::fs::File) -> std::result::Result<(), String>) -> Result<()> {
        let fail = write_error(path);
        let dir = parent_dir(path);
        self.make_dirs(dir).map_err(|e| fail(e.to_string()))?;
        let mut tmp = NamedTempFile::new_in(dir).map_err(|e| fail(e.to_string()))?;
        write(tmp.as_file_mut()).map_err(&fail)?;
        tmp.as_file_mut().flush().map_err(|e| fail(e.to_string()))?;
        // Temporary files are private (0600); outputs are ordinary files.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(|e| fail(e.to_string()))?;
        }
        self.files.push((path.to_path_buf(), tmp));
        Ok(())
    }

    pub fn add_bytes(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.add(path, |f| f.write_all(bytes).map_err(|e| e.to_string()))
    }

    /// Makes `dir` and its missing ancestors, remembering which were made.
    fn make_dirs(&mut self, dir: &Path) -> std::io::Result<()> {
        let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
        for d in missing.into_iter().rev() {
            std::fs::create_dir(d)?;
            self.made_dirs.push(d.to_path_buf());
        }
        Ok(())
    }

    /// Renames every file into place, or none.
    pub fn commit(mut self) -> Result<()> {
        let mut placed: Vec<(PathBuf, Option<TempPath>)> = Vec::new();
        for (path, tmp) in std::mem::take(&mut self.files) {
            match place(&path, tmp) {
                Ok(replaced) => placed.push((path, replaced)),
                Err(e) => {
                    // Best effort: a rename back in the same directory fails only if the
                    // directory itself went away.
                    for (path, replaced) in placed.into_iter().rev() {
                        let _ = match replaced {
                            Some(old) => std::fs::rename(&old, &path),
                            None => std::fs::remove_file(&path),
                        };
                    }
                    return Err(e);
                }
            }
        }
        self.made_dirs.clear();
        Ok(())
    }
}

/// Renames `tmp` to `path`; returns a hard link to the file it replaced, if any, so that a
/// rollback can restore it (and dropping the link on success deletes it).
fn place(path: &Path, tmp: NamedTempFile) -> Result<Option<TempPath>> {
    let fail = write_error(path);
    let replaces_file = std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir());
    let old = if replaces_file {
        let link = tempfile::Builder::new().prefix(".canopy-old").make_in(parent_dir(path), |p| std::fs::hard_link(path, p));
        Some(link.map_err(|e| fail(format!("cannot keep the file it replaces: {e}")))?.into_temp_path())
    } else {
        None
    };
    tmp.persist(path).map_err(|e| fail(e.error.to_string()))?;
    Ok(old)
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Temporary files first, so that the directories made for them are empty.
        self.files.clear();
        for dir in self.made_dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

pub fn write_atomically(path: &Path, write: impl FnOnce(&mut std::fs::File) -> std::result::Result<(), String>) -> Result<()> {
    let mut staged = Staged::new();
    staged.add(path, write)?;
    staged.commit()
}

pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut staged = Staged::new();
    staged.add_bytes(path, bytes)?;
    staged.commit()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn listing(dir: &Path) -> Vec<(String, Option<String>)> {
        let mut all: Vec<_> =
            walk(dir).into_iter().map(|p| (p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read_to_string(&p).ok())).collect();
        all.sort();
        all
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .flat_map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() { std::iter::once(p.clone()).chain(walk(&p)).collect() } else { vec![p] }
            })
            .collect()
    }

    #[test]
    fn a_failed_commit_restores_what_was_there() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("a.txt"), "old a").unwrap();
        std::fs::create_dir(dir.join("c.txt")).unwrap();
        let before = listing(dir);
        let mut staged = Staged::new();
        staged.add_bytes(&dir.join("a.txt"), b"new a").unwrap();
        staged.add_bytes(&dir.join("b.txt"), b"new b").unwrap();
        staged.add_bytes(&dir.join("new/sub/d.txt"), b"new d").unwrap();
        staged.add_bytes(&dir.join("c.txt"), b"new c").unwrap();
        let e = staged.commit().unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot write '{}': ", dir.join("c.txt").display())), "{e}");
        assert_eq!(listing(dir), before);
    }

    #[test]
    fn a_commit_replaces_and_leaves_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("a.txt"), "old a").unwrap();
        let mut staged = Staged::new();
        staged.add_bytes(&dir.join("a.txt"), b"new a").unwrap();
        staged.add_bytes(&dir.join("m/b.txt"), b"new b").unwrap();
        staged.commit().unwrap();
        let expected = [("a.txt", Some("new a")), ("m", None), ("m/b.txt", Some("new b"))];
        assert_eq!(listing(dir), expected.map(|(p, c)| (p.to_string(), c.map(String::from))).to_vec());
    }

    #[test]
    fn a_failed_write_removes_the_directories_it_made() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let mut staged = Staged::new();
        staged.add_bytes(&out.join("a.txt"), b"a").unwrap();
        assert!(staged.add(&out.join("m/b.txt"), |_| Err("no".into())).is_err());
        drop(staged);
        assert!(!out.exists());
    }
}
