//! Fuzz target: see `meshward_node::fuzzing::grants_payload`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshward_node::fuzzing::grants_payload(data);
});
