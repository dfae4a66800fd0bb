//! Fuzz target: see `meshward_node::fuzzing::credential_row`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshward_node::fuzzing::credential_row(data);
});
