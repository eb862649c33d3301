//! TensorBoard event files: every number of a run's metrics records, as scalars tagged by
//! their key at the record's step, so `tensorboard --logdir RUN` shows the curves.
//!
//! The format is small and fixed: TFRecord framing (length, masked CRC-32C of the length,
//! the data, masked CRC-32C of the data) around `Event` protocol buffers with a wall time, a
//! step, and a `Summary` of `(tag, simple_value)` pairs. It is written here by hand (a few
//! varints) because no maintained Rust crate writes it without pulling in a protobuf
//! toolchain; CRC-32C comes from the `crc32c` crate.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The prefix of the event files TensorBoard reads in a directory.
pub const PREFIX: &str = "events.out.tfevents.";

/// TFRecord's masked CRC-32C.
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its masked CRC, the data, its masked CRC.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
fn bytes_field(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// `Event { wall_time = 1 (double), step = 2 (int64), ... }` with `rest` appended.
fn event(wall_time: f64, step: u64, rest: &[u8]) -> Vec<u8> {
    let mut e = vec![0x09];
    e.extend_from_slice(&wall_time.to_le_bytes());
    varint(&mut e, 2 << 3);
    varint(&mut e, step);
    e.extend_from_slice(rest);
    e
}

/// An `Event` holding `summary = 5 { value = 1 { tag = 1, simple_value = 2 (float) } ... }`.
pub fn scalars_event(wall_time: f64, step: u64, values: &[(&str, f32)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, v) in values {
        let mut value = Vec::new();
        bytes_field(&mut value, 1, tag.as_bytes());
        value.push(0x15);
        value.extend_from_slice(&v.to_le_bytes());
        bytes_field(&mut summary, 1, &value);
    }
    let mut rest = Vec::new();
    bytes_field(&mut rest, 5, &summary);
    event(wall_time, step, &rest)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An event file of a run directory (a new one per start or resume: TensorBoard reads them all).
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    pub fn create(dir: &Path) -> Result<Self> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        // The time, the host and the process, then a count: two writers of one process in the
        // same second (a run and its resume from Python) never share a file.
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let k = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (secs, pid) = (now() as u64, std::process::id());
        let name = format!("{PREFIX}{secs}.{}.{pid}.{k}", host.trim());
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // The first event names the format's version.
        let mut rest = Vec::new();
        bytes_field(&mut rest, 3, b"brain.Event:2");
        file.write_all(&record(&event(now(), 0, &rest))).map_err(|e| Error::io(&path, e))?;
        Ok(Self { path, file })
    }

    /// The numbers of a metrics record (`step` is the step; strings and nested values are skipped).
    pub fn write(&mut self, rec: &serde_json::Value) -> Result<()> {
        let Some(obj) = rec.as_object() else { return Ok(()) };
        let step = obj.get("step").and_then(|s| s.as_u64()).unwrap_or(0);
        let values: Vec<(&str, f32)> = obj
            .iter()
            .filter(|(k, _)| k.as_str() != "step")
            .filter_map(|(k, v)| Some((k.as_str(), v.as_f64()? as f32)))
            .collect();
        if values.is_empty() {
            return Ok(());
        }
        let r = record(&scalars_event(now(), step, &values));
        self.file.write_all(&r).map_err(|e| Error::io(&self.path, e))
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_framed_with_masked_crc32c() {
        // CRC-32C's check value, and TFRecord's mask of it.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let r = record(b"abc");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        let want = crc32c::crc32c(b"abc").rotate_right(15).wrapping_add(0xa282_ead8);
        assert_eq!(&r[15..], &want.to_le_bytes());
        // An event: wall time, step 7 (varint), one scalar tagged "loss".
        let e = scalars_event(1.5, 300, &[("loss", 2.0)]);
        assert_eq!(e[0], 0x09);
        assert_eq!(&e[1..9], &1.5f64.to_le_bytes());
        assert_eq!(&e[9..12], &[0x10, 0xac, 0x02]); // 300 = 0b10_0101100
        assert_eq!(e[12], 0x2a);
        let tail = &e[e.len() - 5..];
        assert_eq!(tail, &[0x15, 0, 0, 0, 0x40]);
    }
}
