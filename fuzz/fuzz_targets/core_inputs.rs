//! Fuzz target: see `meshward_node::fuzzing::core_inputs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshward_node::fuzzing::core_inputs(data);
});
