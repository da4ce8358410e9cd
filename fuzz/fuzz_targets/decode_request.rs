//! Fuzzes request frame decoding: any bytes must decode or be refused, never panic or abort.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gregor::server::dispatch::decode_request(bytes::Bytes::copy_from_slice(data));
});
