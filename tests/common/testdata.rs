//! Loads `../shared/testdata/prometheus-xor-chunks.jsonl`: real Prometheus 2.42 chunks and
//! the samples they hold. Shared by the chunk tests, the `xor` bench and `tools` unit tests
//! (each includes this file with `#[path]`).
// Each includer uses a different subset, and inside the library (for `tools` tests) the
// `pub` items are crate-private by construction.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

/// One line of the testdata file.
#[derive(Debug, Clone)]
pub struct TestChunk {
    /// The series, for messages.
    pub labels: String,
    /// The chunk as Prometheus wrote it.
    pub chunk: Vec<u8>,
    /// Its samples as `(t_ms, f64 bits)`.
    pub samples: Vec<(i64, u64)>,
}

/// Where the file is: `$WEFT_TESTDATA` if set, else next to the crate in `../shared`.
///
/// The override exists because a git worktree (for example `/work/wt/<name>`) is not next
/// to `shared/` the way the main checkout is.
pub fn path() -> PathBuf {
    match std::env::var_os("WEFT_TESTDATA") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/testdata/prometheus-xor-chunks.jsonl"
        )),
    }
}

/// The test chunks, or `None` (with a message) if the file is missing outside CI.
///
/// # Panics
///
/// If the file is missing and `CI=true`, or if it does not parse.
pub fn load() -> Option<Vec<TestChunk>> {
    let path = path();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("testdata {} missing under CI: {e}", path.display());
            }
            eprintln!(
                "skipping: testdata {} not readable ({e}); set WEFT_TESTDATA to its path",
                path.display()
            );
            return None;
        }
    };
    Some(
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| parse_line(l).unwrap_or_else(|e| panic!("testdata line {}: {e}", i + 1)))
            .collect(),
    )
}

fn parse_line(line: &str) -> Result<TestChunk, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let labels = v["labels"].as_str().ok_or("no labels")?.to_string();
    let chunk = hex_decode(v["chunk"].as_str().ok_or("no chunk")?)?;
    let samples = v["samples"]
        .as_array()
        .ok_or("no samples")?
        .iter()
        .map(|s| {
            let t = s[0].as_i64().ok_or("sample t not an i64")?;
            let bits = s[1].as_str().ok_or("sample value not a string")?;
            let bits = u64::from_str_radix(bits, 16).map_err(|e| e.to_string())?;
            Ok((t, bits))
        })
        .collect::<Result<_, String>>()?;
    Ok(TestChunk {
        labels,
        chunk,
        samples,
    })
}

/// Decodes lowercase or uppercase hex without separators.
pub fn hex_decode(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err(format!("odd-length hex ({} digits)", s.len()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("hex at {i}: {e}")))
        .collect()
}
