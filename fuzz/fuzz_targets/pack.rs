#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ledgervault_repo::fuzz::pack(data));
