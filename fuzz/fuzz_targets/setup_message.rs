//! Fuzz target: see `meshward_node::fuzzing::setup_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshward_node::fuzzing::setup_message(data);
});
