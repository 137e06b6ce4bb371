//! `stampede backup` and `stampede restore`: an online copy of the embedded mode's data dir
//! as one tar file, taken while the server runs and claims keep coming.
//!
//! What a consistent copy needs: the SQLite file holds everything but the claims the journal
//! acknowledged and the applier has not moved into SQLite yet; those are in the journal's
//! segments, after the applied position recorded in SQLite. The server deletes a segment once
//! all its records are applied, so copying segments *after* the database snapshot could miss
//! records applied (and their segment deleted) in between. Hence:
//!
//! 1. pin every file of the data dir (journal segments, the JWT secret, distribution files)
//!    with a hard link into a staging dir: a file the server deletes from now on stays readable;
//! 2. snapshot the database (`VACUUM INTO`, one read transaction);
//! 3. pin the files that appeared meanwhile (a segment opened by a restart, a new upload);
//! 4. write the tar: a manifest, the snapshot, the pinned files.
//!
//! Every record after the snapshot's applied position is in a pinned segment, so every claim
//! acknowledged before step 2 is in the backup; claims acknowledged later may be too (their
//! records are replayed at start like after a crash). A segment copied while the server
//! appends to it can end in a torn frame, which replay treats as the end of that segment.
//!
//! Restore unpacks into a new or empty data dir and checks the database's integrity; the next
//! `serve` migrates it forward if it came from an older release and replays the journal.
//! The distributed mode's data lives in MySQL and Redis, whose own tools back it up.

use crate::config::{Backend, Settings};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// The manifest's `format`; a tar without it is not a Stampede backup.
const FORMAT: &str = "stampede-backup";
/// Layout version of the archive (not of the schema: the server migrates the database).
const VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const DATABASE: &str = "stampede.db";
/// The staging dir's prefix in the data dir; a backup never copies another's staging dir.
const STAGING_PREFIX: &str = ".backup-";

/// The archive's first entry.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The release that took it.
    pub stampede_version: String,
    pub created_at: jiff::Timestamp,
    /// Files besides the manifest and the database (journal segments, secret, distributions).
    pub files: usize,
}

/// What a backup wrote.
#[derive(Debug, Serialize)]
pub struct BackupSummary {
    pub out: PathBuf,
    pub bytes: u64,
    pub database_bytes: u64,
    pub files: usize,
    pub journal_segments: usize,
}

/// Writes an online backup of `settings`' embedded data dir to `out` (replaced atomically: a
/// partial archive never sits at `out`).
pub async fn backup(settings: &Settings, out: &Path) -> anyhow::Result<BackupSummary> {
    if settings.storage.backend != Backend::Sqlite {
        bail!(
            "stampede backup copies the embedded mode's data dir; with storage.backend = \"mysql\" \
             the data is in MySQL and Redis: back them up with their own tools (mariadb-backup, \
             Redis AOF/RDB)"
        );
    }
    let data_dir = &settings.server.data_dir;
    let db = settings.sqlite_path();
    if !db.is_file() {
        bail!(
            "no embedded database at {} (wrong --data-dir?)",
            db.display()
        );
    }
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(data_dir)
        .with_context(|| format!("creating a staging dir in {}", data_dir.display()))?;
    let pinned_dir = staging.path().join("files");
    let mut pinned = Vec::new();
    pin_new(data_dir, &pinned_dir, &mut pinned)?;
    let snapshot = staging.path().join(DATABASE);
    stampede_store_sqlite::backup::snapshot_into(&db, &snapshot)
        .await
        .context("snapshotting the database")?;
    pin_new(data_dir, &pinned_dir, &mut pinned)?;
    pinned.sort();

    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = out
        .file_name()
        .context("--out must name a file")?
        .to_string_lossy()
        .into_owned();
    let mut partial = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .tempfile_in(&out_dir)
        .with_context(|| format!("creating a file in {}", out_dir.display()))?;
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        stampede_version: env!("CARGO_PKG_VERSION").into(),
        created_at: jiff::Timestamp::now(),
        files: pinned.len(),
    };
    {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(partial.as_file_mut()));
        // Complete: file modes survive (the secret and the database stay owner-only).
        tar.mode(tar::HeaderMode::Complete);
        let body = serde_json::to_vec_pretty(&manifest)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, MANIFEST, body.as_slice())?;
        tar.append_path_with_name(&snapshot, DATABASE)?;
        for rel in &pinned {
            append_pinned(&mut tar, &pinned_dir.join(rel), rel)
                .with_context(|| format!("archiving {}", rel.display()))?;
        }
        tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    }
    partial.as_file().sync_all()?;
    let bytes = partial.as_file().metadata()?.len();
    partial
        .persist(out)
        .with_context(|| format!("writing {}", out.display()))?;
    let journal = Path::new(crate::config::CLAIM_JOURNAL_DIR);
    Ok(BackupSummary {
        out: out.to_path_buf(),
        bytes,
        database_bytes: fs::metadata(&snapshot)?.len(),
        files: pinned.len(),
        journal_segments: pinned.iter().filter(|p| p.starts_with(journal)).count(),
    })
}

/// Appends the file at `path` as `name`, exactly as long as it was when looked at: the live
/// journal segment keeps growing while it is read, and a tar entry longer than its header
/// says would corrupt the archive. (A file that shrank is padded with zeros, which the
/// journal's replay reads as a torn tail.)
fn append_pinned<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
) -> anyhow::Result<()> {
    use std::io::Read;
    let file = fs::File::open(path)?;
    let meta = file.metadata()?;
    let len = meta.len();
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    header.set_size(len);
    header.set_cksum();
    let exact = file.take(len).chain(std::io::repeat(0)).take(len);
    tar.append_data(&mut header, name, exact)?;
    Ok(())
}

/// Hard-links every regular file under `data_dir` not yet in `pinned` into `into` (same
/// relative path), skipping the live database files and staging dirs. A file deleted
/// between listing and linking is skipped: the server only deletes what it no longer needs.
fn pin_new(data_dir: &Path, into: &Path, pinned: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = data_dir.join(&rel);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name_str = name.to_string_lossy();
            if rel.as_os_str().is_empty()
                && (name_str.starts_with(STAGING_PREFIX) || name_str.starts_with(DATABASE))
            {
                continue;
            }
            let child = rel.join(&name);
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(child);
            } else if kind.is_file() && !pinned.contains(&child) {
                let target = into.join(&child);
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                match fs::hard_link(data_dir.join(&child), &target) {
                    Ok(()) => pinned.push(child),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("pinning {}", child.display()));
                    }
                }
            }
        }
    }
    Ok(())
}

/// What a restore wrote.
#[derive(Debug, Serialize)]
pub struct RestoreSummary {
    pub data_dir: PathBuf,
    pub created_at: jiff::Timestamp,
    pub stampede_version: String,
    pub files: usize,
}

/// Unpacks the backup at `from` into `data_dir`, which must not exist or be empty (a restore
/// never mixes with other data). The database's integrity is checked before anything is
/// moved into place.
pub async fn restore(from: &Path, data_dir: &Path) -> anyhow::Result<RestoreSummary> {
    match fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty: restore into a new or empty data dir",
                    data_dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", data_dir.display())),
    }
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)?;
    let unpacked = tempfile::Builder::new()
        .prefix(".stampede-restore-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a staging dir in {}", parent.display()))?;
    let file = fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    archive.set_preserve_permissions(true);
    // `unpack` refuses entries that would land outside the directory (`..`, absolute paths).
    archive
        .unpack(unpacked.path())
        .with_context(|| format!("{} is not a readable backup", from.display()))?;
    let manifest: Manifest = fs::read(unpacked.path().join(MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|m: &Manifest| m.format == FORMAT)
        .with_context(|| format!("{} is not a Stampede backup (no manifest)", from.display()))?;
    if manifest.version > VERSION {
        bail!(
            "the backup's layout version {} is newer than this release reads ({VERSION})",
            manifest.version
        );
    }
    let db = unpacked.path().join(DATABASE);
    stampede_store_sqlite::backup::integrity_check(&db)
        .await
        .context("the backup's database")?;
    fs::remove_file(unpacked.path().join(MANIFEST))?;
    let staged = unpacked.keep();
    if data_dir.exists() {
        // Empty (checked above): replaced by the unpacked tree.
        fs::remove_dir(data_dir)?;
    }
    fs::rename(&staged, data_dir)
        .with_context(|| format!("moving the restored data into {}", data_dir.display()))?;
    Ok(RestoreSummary {
        data_dir: data_dir.to_path_buf(),
        created_at: manifest.created_at,
        stampede_version: manifest.stampede_version,
        files: manifest.files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_skips_the_live_database_and_staging_dirs_and_keeps_deleted_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        for f in [
            "stampede.db",
            "stampede.db-wal",
            "jwt-secret",
            "claim-journal/00000000000000000001.log",
            "distributions/uploads/a.csv",
            ".backup-old/files/x",
        ] {
            let p = d.join(f);
            fs::create_dir_all(p.parent().unwrap_or(d)).unwrap_or_else(|e| panic!("{e}"));
            fs::write(&p, f).unwrap_or_else(|e| panic!("{e}"));
        }
        let into = d.join(".backup-now/files");
        let mut pinned = Vec::new();
        pin_new(d, &into, &mut pinned).unwrap_or_else(|e| panic!("{e}"));
        pinned.sort();
        assert_eq!(
            pinned,
            vec![
                PathBuf::from("claim-journal/00000000000000000001.log"),
                PathBuf::from("distributions/uploads/a.csv"),
                PathBuf::from("jwt-secret"),
            ]
        );
        // The server deletes an applied segment: the pinned link still reads it.
        fs::remove_file(d.join("claim-journal/00000000000000000001.log"))
            .unwrap_or_else(|e| panic!("{e}"));
        fs::write(d.join("claim-journal/00000000000000000009.log"), "new")
            .unwrap_or_else(|e| panic!("{e}"));
        pin_new(d, &into, &mut pinned).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pinned.len(), 4);
        assert_eq!(
            fs::read_to_string(into.join("claim-journal/00000000000000000001.log"))
                .unwrap_or_else(|e| panic!("{e}")),
            "claim-journal/00000000000000000001.log"
        );
    }

    #[tokio::test]
    async fn restore_refuses_a_non_empty_dir_and_a_foreign_tar() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let full = dir.path().join("full");
        fs::create_dir_all(&full).unwrap_or_else(|e| panic!("{e}"));
        fs::write(full.join("x"), "x").unwrap_or_else(|e| panic!("{e}"));
        let tar_path = dir.path().join("foreign.tar");
        {
            let f = fs::File::create(&tar_path).unwrap_or_else(|e| panic!("{e}"));
            let mut b = tar::Builder::new(f);
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, "hello.txt", &b"hi"[..])
                .unwrap_or_else(|e| panic!("{e}"));
            b.finish().unwrap_or_else(|e| panic!("{e}"));
        }
        let e = restore(&tar_path, &full).await.err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("not empty")));
        let fresh = dir.path().join("fresh");
        let e = restore(&tar_path, &fresh)
            .await
            .err()
            .map(|e| format!("{e:#}"));
        assert!(e.is_some_and(|e| e.contains("not a Stampede backup")));
        assert!(!fresh.exists(), "a refused restore leaves nothing behind");
        let e = restore(&dir.path().join("missing.tar"), &fresh).await;
        assert!(e.is_err());
    }
}
