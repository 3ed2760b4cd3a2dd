#![no_main]
// The configuration file (ledgervault.toml): parsing and validation.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ledgervault_cli::config::Config::parse(text, std::path::Path::new("fuzz.toml"));
    }
});
