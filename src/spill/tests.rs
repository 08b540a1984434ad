use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use super::format::{self, ScanEnd};
use super::*;

fn cfg(dir: &Path, file_size: u64) -> SpillConfig {
    SpillConfig {
        dir: dir.join("spill"),
        file_size,
    }
}

fn seeded() -> (u64, SmallRng) {
    let seed = std::env::var("WEFT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (rerun with WEFT_TEST_SEED={seed})");
    (seed, SmallRng::seed_from_u64(seed))
}

/// A chunk-like payload: mostly about 1.2 KiB, sometimes tiny, sometimes up to the limit.
fn random_chunk(rng: &mut SmallRng) -> Vec<u8> {
    let len = match rng.random_range(0..100) {
        0..5 => rng.random_range(1..16),
        5..8 => rng.random_range(16 << 10..=MAX_CHUNK_BYTES),
        _ => rng.random_range(200..1400),
    };
    let mut b = vec![0u8; len];
    rng.fill_bytes(&mut b);
    b
}

fn spill_files_on_disk(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| parse_file_name(e.unwrap().file_name().to_str()?))
        .collect();
    v.sort();
    v
}

/// Overwrites bytes of a spill file on disk (plain writes; the file may also be mapped).
fn poke(dir: &Path, index: u32, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(dir.join(file_name(index)))
        .unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn peek(dir: &Path, index: u32, offset: u64, len: usize) -> Vec<u8> {
    let f = File::open(dir.join(file_name(index))).unwrap();
    let mut b = vec![0; len];
    f.read_exact_at(&mut b, offset).unwrap();
    b
}

/// Writes `n` random chunks and returns each ref with its bytes.
fn write_random(spill: &Spill, rng: &mut SmallRng, n: usize) -> Vec<(SpillRef, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let data = random_chunk(rng);
            let t = i as i64 * 1000 - 50_000;
            let r = spill.write(i as u64, t, t + 999, &data).unwrap();
            (r, data)
        })
        .collect()
}

#[test]
fn write_read_round_trip_of_random_chunks_across_file_rolls() {
    let (_, mut rng) = seeded();
    let tmp = tempfile::tempdir().unwrap();
    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    let written = write_random(&spill, &mut rng, 1500);
    assert!(spill.files() > 3, "rolled to {} files", spill.files());
    // Readable before and after a sync.
    for (r, data) in &written {
        assert_eq!(&spill.read(r).unwrap(), data, "{r:?}");
    }
    spill.sync().unwrap();
    for (r, data) in written.iter().rev() {
        assert_eq!(&spill.read(r).unwrap(), data, "{r:?}");
    }
    let live: u64 = written.iter().map(|(r, _)| u64::from(r.len)).sum();
    assert_eq!(spill.live_bytes(), live);
    assert_eq!(
        spill.disk_bytes(),
        spill.files() as u64 * MIN_FILE_SIZE_BYTES
    );
    // The refs agree with what a walk of the files finds, in order.
    let mut walked = Vec::new();
    for i in spill_files_on_disk(spill.dir()) {
        let bytes = std::fs::read(spill.dir().join(file_name(i))).unwrap();
        let scan = decode_records(&bytes);
        assert!(matches!(scan.end, ScanEnd::Clean { .. }), "{:?}", scan.end);
        for (off, rec) in scan.records {
            walked.push((i, off, rec.series_ref, rec.data.to_vec()));
        }
    }
    let expected: Vec<_> = written
        .iter()
        .enumerate()
        .map(|(i, (r, d))| (r.file, r.offset, i as u64, d.clone()))
        .collect();
    assert_eq!(walked, expected);
}

#[test]
fn refs_read_the_same_bytes_after_reopen() {
    let (_, mut rng) = seeded();
    let tmp = tempfile::tempdir().unwrap();
    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    let written = write_random(&spill, &mut rng, 400);
    spill.sync().unwrap();
    let files_before = spill.files();
    // What a checkpoint would hold.
    let mut encoded = Vec::new();
    for (r, _) in &written {
        r.encode(&mut encoded);
    }
    drop(spill);

    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    assert_eq!(spill.files(), files_before);
    for (chunk, (_, data)) in encoded.chunks(SpillRef::ENCODED_LEN).zip(&written) {
        let r = SpillRef::decode(chunk).unwrap();
        spill.retain(&r).unwrap();
        assert_eq!(&spill.read(&r).unwrap(), data);
    }
    assert_eq!(spill.gc(), 0);
    // New writes go to a new file after the old ones.
    let r = spill.write(1, 0, 0, b"new").unwrap();
    assert!(written.iter().all(|(o, _)| o.file < r.file));
    assert_eq!(spill.read(&r).unwrap(), b"new");
}

#[test]
fn file_is_deleted_when_its_last_ref_is_released_and_it_is_not_active() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    let chunk = vec![7u8; 10_000];
    let refs: Vec<SpillRef> = (0..40)
        .map(|i| spill.write(i, 0, 1, &chunk).unwrap())
        .collect();
    let first = refs[0].file;
    let active = refs.last().unwrap().file;
    assert!(active > first + 1);
    let in_first: Vec<_> = refs.iter().filter(|r| r.file == first).collect();
    let (last, rest) = in_first.split_last().unwrap();
    for r in rest {
        spill.release(r);
    }
    assert!(spill_files_on_disk(spill.dir()).contains(&first));
    let (files, disk) = (spill.files(), spill.disk_bytes());
    spill.release(last);
    assert!(!spill_files_on_disk(spill.dir()).contains(&first));
    assert_eq!(spill.files(), files - 1);
    assert_eq!(spill.disk_bytes(), disk - MIN_FILE_SIZE_BYTES);
    assert!(matches!(spill.read(last), Err(SpillError::UnknownFile(f)) if f == first));

    // The active file stays while it has no references...
    for r in refs.iter().filter(|r| r.file == active) {
        spill.release(r);
    }
    assert!(spill_files_on_disk(spill.dir()).contains(&active));
    // ...and goes when a roll makes it inactive (each chunk written meanwhile is released
    // before the next write, so it has no references then).
    let next = loop {
        let r = spill.write(1, 0, 1, &chunk).unwrap();
        if r.file != active {
            break r;
        }
        assert!(spill_files_on_disk(spill.dir()).contains(&active));
        spill.release(&r);
    };
    assert!(!spill_files_on_disk(spill.dir()).contains(&active));
    let middle: u64 = refs
        .iter()
        .filter(|r| r.file != first && r.file != active)
        .map(|r| u64::from(r.len))
        .sum();
    assert_eq!(spill.live_bytes(), middle + u64::from(next.len));
    // A double release is logged and ignored, not an underflow that frees another ref's file.
    spill.release(&next);
    spill.release(&next);
    assert_eq!(spill.live_bytes(), middle);
    assert!(spill_files_on_disk(spill.dir()).contains(&next.file));
}

#[test]
fn gc_after_reopen_deletes_unreferenced_files_and_keeps_retained_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    let chunk = vec![3u8; 20_000];
    let refs: Vec<SpillRef> = (0..30)
        .map(|i| spill.write(i, 0, 1, &chunk).unwrap())
        .collect();
    spill.sync().unwrap();
    let files: Vec<u32> = spill_files_on_disk(spill.dir());
    assert!(files.len() >= 4);
    drop(spill);

    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    // A checkpoint that still refers to one chunk of the second file.
    let kept = *refs.iter().find(|r| r.file == files[1]).unwrap();
    spill.retain(&kept).unwrap();
    assert_eq!(spill.gc(), files.len() - 1);
    assert_eq!(spill_files_on_disk(spill.dir()), vec![files[1]]);
    assert_eq!(spill.read(&kept).unwrap(), chunk);
    assert_eq!(spill.live_bytes(), u64::from(kept.len));
    assert_eq!(spill.gc(), 0);
    // Unknown files and refs outside the file are refused at retain.
    assert!(matches!(
        spill.retain(&refs[0]),
        Err(SpillError::UnknownFile(_))
    ));
    let outside = SpillRef {
        offset: MIN_FILE_SIZE_BYTES - 10,
        ..kept
    };
    assert!(matches!(
        spill.retain(&outside),
        Err(SpillError::Corrupt(_))
    ));
    spill.release(&kept);
    assert_eq!(spill.files(), 0);
}

#[test]
fn any_damaged_byte_of_a_record_reads_as_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    let a = spill.write(1, 10, 20, b"first chunk").unwrap();
    let b = spill.write(2, 30, 40, b"second chunk, the victim").unwrap();
    let c = spill.write(3, 50, 60, b"third").unwrap();
    let dir = spill.dir().to_path_buf();
    let rec_len = RECORD_HEADER_LEN + b.len as usize;
    let original = peek(&dir, b.file, b.offset, rec_len);
    for i in 0..rec_len {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = original[i];
            bad ^= flip;
            poke(&dir, b.file, b.offset + i as u64, &[bad]);
            assert!(
                matches!(spill.read(&b), Err(SpillError::Corrupt(_))),
                "byte {i} ^ {flip:#x} not detected"
            );
            poke(&dir, b.file, b.offset + i as u64, &original[i..=i]);
        }
    }
    assert_eq!(spill.read(&b).unwrap(), b"second chunk, the victim");
    assert_eq!(spill.read(&a).unwrap(), b"first chunk");
    assert_eq!(spill.read(&c).unwrap(), b"third");

    // Refs that disagree with the record, or point outside the written area.
    let end = c.offset + (RECORD_HEADER_LEN + c.len as usize) as u64;
    for bad in [
        SpillRef {
            len: b.len + 1,
            ..b
        },
        SpillRef {
            len: b.len - 1,
            ..b
        },
        SpillRef {
            crc32: b.crc32 ^ 1,
            ..b
        },
        SpillRef {
            offset: b.offset + 1,
            ..b
        },
        SpillRef {
            offset: a.offset,
            ..b
        },
        SpillRef {
            offset: end,
            len: 1,
            ..b
        },
        SpillRef {
            offset: MIN_FILE_SIZE_BYTES,
            ..b
        },
        SpillRef { offset: 0, ..b },
        SpillRef { len: 0, ..b },
        SpillRef { len: u32::MAX, ..b },
        SpillRef {
            offset: u64::MAX,
            ..b
        },
    ] {
        assert!(
            matches!(spill.read(&bad), Err(SpillError::Corrupt(_))),
            "{bad:?}: {:?}",
            spill.read(&bad)
        );
    }
    assert!(matches!(
        spill.read(&SpillRef { file: 99, ..b }),
        Err(SpillError::UnknownFile(99))
    ));
}

#[test]
fn torn_tail_and_torn_or_broken_headers_are_handled_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    let refs: Vec<SpillRef> = (0..5)
        .map(|i| spill.write(i, 0, 1, &[i as u8 + 1; 500]).unwrap())
        .collect();
    spill.sync().unwrap();
    let dir = spill.dir().to_path_buf();
    let file = refs[0].file;
    drop(spill);
    // A torn last record: its data was only half written before power loss.
    let last = refs[4];
    poke(
        &dir,
        file,
        last.offset + RECORD_HEADER_LEN as u64 + 100,
        &[0u8; 400],
    );
    // A file whose creation was torn (no header), and one with a damaged header.
    std::fs::write(dir.join(file_name(file + 1)), [0u8; 4096]).unwrap();
    std::fs::write(
        dir.join(file_name(file + 2)),
        b"WEFTSPL1 but not really a header",
    )
    .unwrap();
    // Files the spill does not own are ignored.
    std::fs::write(dir.join("spill-00000001.broken"), b"x").unwrap();

    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    assert_eq!(spill.files(), 3);
    for (i, r) in refs[..4].iter().enumerate() {
        spill.retain(r).unwrap();
        assert_eq!(spill.read(r).unwrap(), vec![i as u8 + 1; 500]);
    }
    assert!(matches!(spill.read(&last), Err(SpillError::Corrupt(_))));
    let in_broken = SpillRef {
        file: file + 2,
        ..refs[0]
    };
    assert!(matches!(
        spill.read(&in_broken),
        Err(SpillError::Corrupt(_))
    ));
    let in_headerless = SpillRef {
        file: file + 1,
        ..refs[0]
    };
    assert!(matches!(
        spill.read(&in_headerless),
        Err(SpillError::Corrupt(_))
    ));
    // gc collects the header-less file but keeps the broken one as evidence.
    assert_eq!(spill.gc(), 1);
    assert_eq!(spill_files_on_disk(&dir), vec![file, file + 2]);
    // New files come after every existing index.
    let r = spill.write(9, 0, 0, b"after").unwrap();
    assert_eq!(r.file, file + 3);

    let dump = inspect(&dir).unwrap();
    println!("{dump}");
    assert!(dump.contains(&format!("TORN at {}", last.offset)), "{dump}");
    assert!(dump.contains("BAD HEADER"), "{dump}");
    assert!(dump.contains("ignored: spill-00000001.broken"), "{dump}");
    assert!(dump.contains("4 records, 2000 chunk bytes"), "{dump}");
}

#[test]
fn inspect_lists_every_record_with_its_crc_status() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    let r = spill.write(42, -5, 7, b"abc").unwrap();
    spill.write(43, 8, 9, b"defg").unwrap();
    let dump = inspect(spill.dir()).unwrap();
    let expected = format!(
        "spill dir {}: 1 files\n\
         spill-00000000: {MIN_FILE_SIZE_BYTES} bytes, header ok (index 0)\n  \
         @24 series 42 t [-5, 7] len 3 crc {:#010x} ok\n  \
         @63 series 43 t [8, 9] len 4 crc {:#010x} ok\n  \
         end of data at 103, zeros to end of file\n  \
         2 records, 7 chunk bytes\n",
        spill.dir().display(),
        r.crc32,
        crc32fast::hash(b"defg"),
    );
    assert_eq!(dump, expected);
}

#[test]
fn invalid_writes_and_configs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    assert!(matches!(
        spill.write(1, 0, 0, b""),
        Err(SpillError::Invalid(_))
    ));
    assert!(matches!(
        spill.write(1, 5, 4, b"x"),
        Err(SpillError::Invalid(_))
    ));
    assert!(matches!(
        spill.write(1, 0, 0, &vec![0; MAX_CHUNK_BYTES + 1]),
        Err(SpillError::TooLarge { .. })
    ));
    // The largest chunk fits even a minimal file, twice in a row (so it rolls).
    let big = vec![9u8; MAX_CHUNK_BYTES];
    let a = spill.write(1, 0, 0, &big).unwrap();
    let b = spill.write(1, 0, 0, &big).unwrap();
    assert_ne!(a.file, b.file);
    assert_eq!(spill.read(&b).unwrap(), big);
    for size in [0, MIN_FILE_SIZE_BYTES - 1, MAX_FILE_SIZE_BYTES + 1] {
        assert!(matches!(
            Spill::open(cfg(tmp.path(), size)),
            Err(SpillError::Invalid(_))
        ));
    }
}

#[test]
fn enospc_at_allocation_is_disk_full_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    spill.inject_enospc.store(true, Ordering::SeqCst);
    let err = spill.write(1, 0, 0, b"x").unwrap_err();
    assert!(matches!(err, SpillError::DiskFull { .. }), "{err}");
    assert_eq!(
        (spill.files(), spill.disk_bytes(), spill.live_bytes()),
        (0, 0, 0)
    );
    assert!(spill_files_on_disk(spill.dir()).is_empty());
    // Space is back: the same index is used, nothing was skipped or poisoned.
    let r = spill.write(1, 0, 0, b"x").unwrap();
    assert_eq!(r.file, 0);
    // Again at a roll: the full active file stays, the refs in it stay readable.
    let chunk = vec![1u8; 30_000];
    let refs: Vec<_> = (0..4)
        .map(|_| spill.write(1, 0, 0, &chunk).unwrap())
        .collect();
    assert!(refs.iter().all(|x| x.file == 0));
    spill.inject_enospc.store(true, Ordering::SeqCst);
    assert!(matches!(
        spill.write(1, 0, 0, &chunk),
        Err(SpillError::DiskFull { .. })
    ));
    assert_eq!(spill.files(), 1);
    assert!(!spill.is_poisoned());
    spill.sync().unwrap();
    let next = spill.write(1, 0, 0, &chunk).unwrap();
    assert_eq!(next.file, 1);
    for x in refs.iter().chain([&r]) {
        assert!(spill.read(x).is_ok());
    }
}

#[test]
fn failed_msync_poisons_writes_and_syncs_but_reads_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    let a = spill.write(1, 0, 0, b"before").unwrap();
    spill.inject_eio.store(true, Ordering::SeqCst);
    let err = spill.sync().unwrap_err();
    assert!(matches!(err, SpillError::Io { op: "msync", .. }), "{err}");
    assert!(spill.is_poisoned());
    // Never retried: a later sync could falsely succeed after the kernel dropped the pages.
    assert!(matches!(spill.sync(), Err(SpillError::Poisoned)));
    assert!(matches!(
        spill.write(1, 0, 0, b"after"),
        Err(SpillError::Poisoned)
    ));
    assert_eq!(spill.read(&a).unwrap(), b"before");
    spill.release(&a);
    assert_eq!(spill.live_bytes(), 0);
    // A restart recovers.
    drop(spill);
    let spill = Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap();
    assert_eq!(spill.gc(), 1);
    spill.write(1, 0, 0, b"after").unwrap();
    spill.sync().unwrap();
}

/// A mounted tmpfs, unmounted on drop (as in `tests/disk_full.rs`).
struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("weft-spill-enospc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn full_tmpfs_gives_disk_full_and_spilling_resumes_when_space_returns() {
    let Some(fs) = Tmpfs::mount(1 << 20) else {
        println!(
            "skipping: cannot mount a tmpfs (need root); the injected ENOSPC test covers the path"
        );
        return;
    };
    let size = 256 << 10;
    let spill = Spill::open(cfg(&fs.dir, size)).unwrap();
    let chunk = vec![5u8; 50_000];
    let mut refs = Vec::new();
    let err = loop {
        match spill.write(1, 0, 0, &chunk) {
            Ok(r) => refs.push(r),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, SpillError::DiskFull { .. }), "{err}");
    assert_eq!(spill.files(), 4, "1 MiB holds four 256 KiB files");
    assert_eq!(spill_files_on_disk(spill.dir()).len(), 4);
    spill.sync().unwrap();
    for r in &refs {
        assert_eq!(spill.read(r).unwrap(), chunk);
    }
    // Free the first file; the next write gets a new one.
    let first = refs[0].file;
    for r in refs.iter().filter(|r| r.file == first) {
        spill.release(r);
    }
    let r = spill.write(1, 0, 0, &chunk).unwrap();
    assert_eq!(spill.read(&r).unwrap(), chunk);
}

#[test]
fn concurrent_writers_readers_and_releasers_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = Arc::new(Spill::open(cfg(tmp.path(), MIN_FILE_SIZE_BYTES)).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let spill = spill.clone();
            std::thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(t);
                let mut live: Vec<(SpillRef, Vec<u8>)> = Vec::new();
                for i in 0..600 {
                    let data = random_chunk(&mut rng);
                    let r = spill.write(t, i, i, &data).unwrap();
                    live.push((r, data));
                    if rng.random_bool(0.5) {
                        let k = rng.random_range(0..live.len());
                        let (r, data) = live.swap_remove(k);
                        assert_eq!(spill.read(&r).unwrap(), data);
                        spill.release(&r);
                    }
                    if i % 100 == 0 {
                        spill.sync().unwrap();
                    }
                }
                live
            })
        })
        .collect();
    let live: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let mut per_file: HashMap<u32, u64> = HashMap::new();
    for (r, data) in &live {
        assert_eq!(&spill.read(r).unwrap(), data);
        *per_file.entry(r.file).or_default() += 1;
    }
    assert_eq!(
        spill.live_bytes(),
        live.iter().map(|(r, _)| u64::from(r.len)).sum::<u64>()
    );
    // Only files with live refs remain, plus the active one.
    assert!(spill.files() <= per_file.len() + 1);
    for (r, _) in &live {
        spill.release(r);
    }
    assert!(spill.files() <= 1);
    assert_eq!(spill.live_bytes(), 0);
}

fn rss_file_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    // Pages of a file mapping count as RssFile, or as RssShmem when the file is on tmpfs.
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(field("RssFile:")? + field("RssShmem:")?)
}

#[test]
fn writing_64_mib_keeps_the_mapped_rss_bounded() {
    // RSS is per process and other tests map spill files too, so the measurement runs alone
    // in a child process: this test binary, filtered to the ignored test below.
    if rss_file_kib().is_none() {
        println!("skipping: /proc/self/status is not available");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "spill::tests::rss_child_writes_64_mib",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WEFT_SPILL_RSS_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the child failed");
    assert!(stdout.contains("rss grew by"), "the child did not run");
}

#[test]
#[ignore = "run by writing_64_mib_keeps_the_mapped_rss_bounded in a child process"]
fn rss_child_writes_64_mib() {
    if std::env::var_os("WEFT_SPILL_RSS_CHILD").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut chunk = vec![0u8; 1200];
    for (i, b) in chunk.iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    // Warm up: the first run of each code path faults in pages of this (large, debug) test
    // binary, which count as RssFile too. Run them all once (write, roll, sync, read).
    {
        let warm = Spill::open(cfg(&tmp.path().join("warm"), MIN_FILE_SIZE_BYTES)).unwrap();
        for i in 0..300 {
            let r = warm.write(i, 0, 0, &chunk).unwrap();
            warm.read(&r).unwrap();
        }
        warm.sync().unwrap();
    }
    let spill = Spill::open(cfg(tmp.path(), 16 << 20)).unwrap();
    let before = rss_file_kib().unwrap();
    let mut max_growth = 0;
    let mut written = 0u64;
    let mut refs = Vec::new();
    let mut i = 0u64;
    while written < 64 << 20 {
        chunk[..8].copy_from_slice(&i.to_le_bytes());
        refs.push(spill.write(i, i as i64, i as i64, &chunk).unwrap());
        written += chunk.len() as u64;
        i += 1;
        if i % 1000 == 0 {
            max_growth = max_growth.max(rss_file_kib().unwrap().saturating_sub(before));
        }
    }
    spill.sync().unwrap();
    // Reads (pread) do not map anything either.
    for r in refs.iter().step_by(7) {
        assert_eq!(spill.read(r).unwrap().len(), 1200);
    }
    let after = rss_file_kib().unwrap();
    max_growth = max_growth.max(after.saturating_sub(before));
    println!(
        "rss grew by at most {max_growth} KiB while writing {} MiB in {} files",
        written >> 20,
        spill.files()
    );
    // The active file's unsynced part (at most SYNC_EVERY_BYTES) and some slack.
    assert!(
        max_growth < (SYNC_EVERY_BYTES >> 10) + (2 << 10),
        "file-backed RSS grew by {max_growth} KiB"
    );
}

proptest! {
    #[test]
    fn spill_ref_decode_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(r) = SpillRef::decode(&bytes) {
            let mut out = Vec::new();
            r.encode(&mut out);
            prop_assert_eq!(out, bytes);
        }
    }

    #[test]
    fn valid_spill_refs_round_trip(
        file in any::<u32>(),
        offset in FILE_HEADER_LEN as u64..=MAX_FILE_SIZE_BYTES,
        len in 1..=MAX_CHUNK_BYTES as u32,
        crc32 in any::<u32>(),
    ) {
        let r = SpillRef { file, offset, len, crc32 };
        let mut out = Vec::new();
        r.encode(&mut out);
        prop_assert_eq!(out.len(), SpillRef::ENCODED_LEN);
        prop_assert_eq!(SpillRef::decode(&out).unwrap(), r);
    }

    #[test]
    fn record_decoder_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(Some((rec, used))) = format::decode_record(&bytes) {
            let mut out = Vec::new();
            format::encode_record(rec.series_ref, rec.min_t, rec.max_t, rec.data, &mut out).unwrap();
            prop_assert_eq!(&out[..], &bytes[..used]);
        }
        let _ = format::decode_file_header(&bytes);
        let scan = decode_records(&bytes);
        let _ = format::inspect_bytes("spill-00000000", &bytes);
        for (off, rec) in scan.records {
            prop_assert!(off as usize >= FILE_HEADER_LEN && (off as usize) < bytes.len());
            prop_assert!(!rec.data.is_empty());
        }
    }

    #[test]
    fn encoded_records_decode_to_themselves(
        recs in proptest::collection::vec(
            (any::<u64>(), any::<i64>(), 0..u32::MAX as i64, proptest::collection::vec(any::<u8>(), 1..300)),
            0..10,
        ),
        tail_zeros in 0usize..50,
    ) {
        let mut file = format::encode_file_header(3).to_vec();
        let mut offsets = Vec::new();
        for (s, min_t, span, data) in &recs {
            offsets.push(file.len() as u64);
            let max_t = min_t.saturating_add(*span);
            format::encode_record(*s, *min_t, max_t, data, &mut file).unwrap();
        }
        let end = file.len() as u64;
        file.resize(file.len() + tail_zeros, 0);
        let scan = decode_records(&file);
        prop_assert_eq!(scan.header, Some(format::FileHeader { index: 3 }));
        prop_assert_eq!(scan.end, ScanEnd::Clean { offset: end });
        prop_assert_eq!(scan.records.len(), recs.len());
        for ((off, rec), ((s, min_t, span, data), want_off)) in scan.records.iter().zip(recs.iter().zip(&offsets)) {
            prop_assert_eq!(off, want_off);
            prop_assert_eq!(rec.series_ref, *s);
            prop_assert_eq!(rec.min_t, *min_t);
            prop_assert_eq!(rec.max_t, min_t.saturating_add(*span));
            prop_assert_eq!(rec.data, &data[..]);
        }
    }
}
