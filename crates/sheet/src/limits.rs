//! Size limits applied to uploaded spreadsheets.

/// Bounds that keep one hostile upload from exhausting memory or disk. The defaults suit
/// production; tests pass smaller values to build hostile files quickly.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest cell, CSV field or CSV line, in bytes. Excel caps a cell at 32,767 characters, so
    /// anything far longer is not a list of user ids.
    pub max_cell_bytes: usize,
    /// Most data rows in one file.
    pub max_rows: u64,
    /// Most bytes an XLSX may decompress to, all entries together, counted while actually
    /// decompressing (the sizes an archive declares can lie).
    pub max_uncompressed_bytes: u64,
    /// Highest decompressed / compressed ratio, checked once more than
    /// [`RATIO_CHECK_FLOOR`] bytes came out, so small legitimate files are never refused by it.
    /// The compressed size is the file's size on disk, which cannot lie.
    pub max_compression_ratio: u64,
    /// Largest decompressed `xl/sharedStrings.xml`. calamine holds the whole table in memory
    /// (about 55 MB per million unique strings), so this bounds the memory of every read.
    pub max_shared_strings_bytes: u64,
}

/// Below this many decompressed bytes the compression ratio is not checked.
pub const RATIO_CHECK_FLOOR: u64 = 16 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cell_bytes: 64 << 10,
            max_rows: 10_000_000,
            max_uncompressed_bytes: 2 << 30,
            max_compression_ratio: 200,
            max_shared_strings_bytes: 128 << 20,
        }
    }
}
