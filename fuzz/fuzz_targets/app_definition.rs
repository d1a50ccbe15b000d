//! An app definition as the API receives it: JSON to `AppSpec`, then its normalization and
//! checks. Nothing may panic; a definition the checks accept must survive a round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut spec) = serde_json::from_slice::<dcos_core::AppSpec>(data) else {
        return;
    };
    if spec.normalize_and_validate().is_ok() {
        let json = serde_json::to_vec(&spec).expect("an accepted app serializes");
        let mut again: dcos_core::AppSpec =
            serde_json::from_slice(&json).expect("an accepted app reads back");
        again
            .normalize_and_validate()
            .expect("an accepted app is accepted again");
    }
});
