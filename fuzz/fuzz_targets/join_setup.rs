//! Fuzz target: see `meshward_node::fuzzing::join_setup`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshward_node::fuzzing::join_setup(data);
});
