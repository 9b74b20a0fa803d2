#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exhost_fuzz_checks::module_bytes(data));
