#![no_main]

//! Valid modules built by wasm-smith from the fuzzer's bytes, with what a
//! hostile author would reach for (bulk memory, a start function, tables,
//! mutable globals, SIMD, floats), through the validator's checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut input = arbitrary::Unstructured::new(data);
    let config = wasm_smith::Config {
        max_imports: 0,
        max_memories: 1,
        max_tables: 2,
        bulk_memory_enabled: true,
        reference_types_enabled: true,
        simd_enabled: true,
        relaxed_simd_enabled: false,
        threads_enabled: false,
        gc_enabled: false,
        memory64_enabled: false,
        exceptions_enabled: false,
        tail_call_enabled: false,
        wide_arithmetic_enabled: false,
        custom_page_sizes_enabled: false,
        allow_start_export: true,
        ..wasm_smith::Config::default()
    };
    if let Ok(module) = wasm_smith::Module::new(config, &mut input) {
        exhost_fuzz_checks::module_bytes(&module.to_bytes());
    }
});
