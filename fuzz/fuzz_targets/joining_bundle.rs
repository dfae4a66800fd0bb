//! Fuzz target: see `meshward_node::fuzzing::joining_bundle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshward_node::fuzzing::joining_bundle(data);
});
