//! `--wal.on-corruption=repair` on arbitrary bytes: replaying them as the only segment, and as
//! an earlier segment followed by another, and salvaging them as a corrupt checkpoint, must
//! never panic nor fail, and replay must never hand over a sample or flush mark of a ref that
//! no series record defined before it.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use weft::wal::checkpoint::salvage_checkpoint;
use weft::wal::{replay_with, MemDir, OnCorruption, Record, ReplayItem};

fuzz_target!(|data: &[u8]| {
    let _ = salvage_checkpoint(data, |_| Ok(()));
    for names in [&["00000000"][..], &["00000000", "00000001"][..]] {
        let dir = MemDir::new();
        for n in names {
            dir.put(n, data.to_vec());
        }
        let mut known = HashSet::new();
        replay_with(&dir, OnCorruption::Repair, |item| {
            match item {
                ReplayItem::Series(s) => {
                    known.insert(s.series_ref);
                }
                ReplayItem::Record(Record::Series { series_ref, .. }) => {
                    known.insert(series_ref);
                }
                ReplayItem::Record(Record::Samples(s)) => {
                    assert!(s.iter().all(|x| known.contains(&x.series_ref)));
                }
                ReplayItem::Record(Record::FlushMark { series_ref, .. }) => {
                    assert!(known.contains(&series_ref));
                }
                ReplayItem::Record(Record::Histograms(h) | Record::FloatHistograms(h)) => {
                    assert!(h.iter().all(|x| known.contains(&x.series_ref)));
                }
                ReplayItem::Record(Record::Exemplars { .. } | Record::Metadata { .. }) => {}
            }
            Ok(())
        })
        .expect("repair never fails on bytes alone");
    }
});
