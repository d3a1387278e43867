//! The gateway configuration loader (YAML or JSON text): never panics, and a configuration it
//! accepts loads again, unchanged, from its own JSON serialization.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmcp_types::config::from_yaml_str;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match from_yaml_str(text) {
        Ok(config) => {
            let json = serde_json::to_string(&config).expect("a config serializes");
            let again = from_yaml_str(&json).expect("a serialized valid config loads");
            assert_eq!(again, config);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
