//! Fuzz target: see `meshward_node::fuzzing::audit_records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshward_node::fuzzing::audit_records(data);
});
