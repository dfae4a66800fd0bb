//! Fuzz target: see `meshward_node::fuzzing::fork_choice`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshward_node::fuzzing::fork_choice(data);
});
