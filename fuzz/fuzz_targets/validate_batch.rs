//! Fuzzes record batch validation and the stored-batch walkers used by fetch and recovery.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = gregor::log::batch::validate_produce_batch(data) {
        let _ = gregor::log::records::first_record_at_or_after(&view, 0, 0);
    }
    for (_, b) in gregor::log::batch::BatchIter::new(data) {
        let _ = b.last_offset();
    }
});
