#![no_main]
// A client archive (the JSON stream `client backup` stores).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ledgervault_tenant::Archive::decode(data);
});
