//! The distribution's file of user ids: `--file` as it is, or one `stampede gen users` writes
//! into the temp directory (removed afterwards), read into memory and labelled by its content.

use super::DistributionOptions;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The file format asked of `stampede gen users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    Csv,
    Xlsx,
}

impl FileFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Xlsx => "xlsx",
        }
    }

    pub(super) fn content_type(self) -> &'static str {
        match self {
            FileFormat::Csv => "text/csv",
            FileFormat::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }
}

/// Removes a generated file when dropped.
struct Generated(Option<PathBuf>);

impl Drop for Generated {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Runs `stampede gen users` into the temp directory.
fn generate(opts: &DistributionOptions) -> anyhow::Result<Generated> {
    let out = std::env::temp_dir().join(format!(
        "stampede-bench-users-{}-{}.{}",
        opts.rows,
        std::process::id(),
        opts.format.as_str()
    ));
    eprintln!(
        "generating {} rows of {} with {} ...",
        opts.rows,
        opts.format.as_str(),
        opts.stampede_bin.display()
    );
    let started = Instant::now();
    let status = Command::new(&opts.stampede_bin)
        .args(["gen", "users", "--rows", &opts.rows.to_string()])
        .args(["--format", opts.format.as_str(), "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .with_context(|| {
            format!(
                "running {} (--stampede-bin, or --file to upload an existing file)",
                opts.stampede_bin.display()
            )
        })?;
    let generated = Generated(Some(out));
    if !status.success() {
        bail!("`stampede gen users` failed: {status}");
    }
    eprintln!("generated in {:.2} s", started.elapsed().as_secs_f64());
    Ok(generated)
}

/// The file to upload, read.
pub(super) struct UsersFile {
    /// Removes a generated file when the run is over.
    _generated: Generated,
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub format: FileFormat,
}

/// `--file`, or a generated file.
pub(super) fn prepare(opts: &DistributionOptions) -> anyhow::Result<UsersFile> {
    let (generated, path): (Generated, PathBuf) = match &opts.file {
        Some(p) => (Generated(None), p.clone()),
        None => {
            let g = generate(opts)?;
            let p = g.0.clone().unwrap_or_default();
            (g, p)
        }
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let format = guess_format(&bytes, opts.format);
    eprintln!(
        "file: {} ({:.1} MiB, {} bytes)",
        path.display(),
        bytes.len() as f64 / 1_048_576.0,
        bytes.len()
    );
    Ok(UsersFile {
        _generated: generated,
        path,
        bytes,
        format,
    })
}

/// The file's format: an XLSX is a zip (`PK`), anything else is sent as CSV. The server
/// decides by content anyway; this only labels the part.
fn guess_format(bytes: &[u8], asked: FileFormat) -> FileFormat {
    match bytes {
        [] => asked,
        [b'P', b'K', ..] => FileFormat::Xlsx,
        _ => FileFormat::Csv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_guessed_from_content() {
        assert_eq!(
            guess_format(b"PK\x03\x04", FileFormat::Csv),
            FileFormat::Xlsx
        );
        assert_eq!(
            guess_format(b"user_id\n1\n", FileFormat::Xlsx),
            FileFormat::Csv
        );
        assert_eq!(guess_format(b"", FileFormat::Xlsx), FileFormat::Xlsx);
    }
}
