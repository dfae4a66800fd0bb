//! Fuzz target: see `meshward_node::fuzzing::mastered_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshward_node::fuzzing::mastered_record(data);
});
