//! A connected gateway/proxy pair (fixed keys, connected once per process and kept from one
//! input to the next) fed scripts of raw, replayed, tampered, forged and sealed datagrams,
//! losses and passing time; only inputs that make a handshake happen pay for one. See
//! `src/session.rs` for the script format, the per-input budgets and what each delivery
//! asserts (drops counted, replays refused, sealed packets delivered intact, no timer left
//! in the past).
//!
//! Inputs differ a hundredfold in cost (a handshake is milliseconds under the fuzzer's
//! instrumentation, most inputs tens of microseconds), so this target asks libFuzzer to
//! weigh corpus units by their execution time (`-entropic_scale_per_exec_time=1`, put
//! before the command line's own flags: `-entropic_scale_per_exec_time=0` there turns it
//! off). Handshake inputs are still run, just not as often as the cheap ones.
//!
//! `LINKPOOL_FUZZ_STATS=N` prints what the inputs cost every N inputs (the share that
//! paid for handshakes is what sets the rate).
//!
//! Written out rather than with `fuzz_target!`, whose `LLVMFuzzerInitialize` cannot reach
//! the command line; the rest is what the macro expands to.
#![no_main]

use std::ffi::{c_char, c_int};
use std::sync::{Mutex, OnceLock};

use linkpool_fuzz::session::Pair;

/// libFuzzer flags this target runs with unless the command line says otherwise.
const DEFAULT_FLAGS: &[&std::ffi::CStr] = &[c"-entropic_scale_per_exec_time=1"];

static PAIR: OnceLock<Mutex<Pair>> = OnceLock::new();
static STATS_EVERY: OnceLock<Option<u64>> = OnceLock::new();

fn run(data: &[u8]) {
    let pair = PAIR.get_or_init(|| Mutex::new(Pair::new()));
    // A panic in an earlier input poisons the lock; libFuzzer stops at the first anyway.
    let mut pair = pair.lock().unwrap_or_else(|e| e.into_inner());
    pair.run(data);
    let every = STATS_EVERY.get_or_init(|| {
        std::env::var("LINKPOOL_FUZZ_STATS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
    });
    if let Some(every) = every {
        let totals = pair.totals();
        if totals.inputs.is_multiple_of(*every) {
            eprintln!("session_pair: {totals}");
        }
    }
}

/// Called by libFuzzer before it parses its flags: [`DEFAULT_FLAGS`] go in right after
/// the program name, so that the same flags given on the command line (later) win.
///
/// # Safety
///
/// libFuzzer passes its own `main`'s `argc` and `argv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn LLVMFuzzerInitialize(
    argc: *mut c_int,
    argv: *mut *mut *mut c_char,
) -> c_int {
    libfuzzer_sys::initialize(std::ptr::null(), std::ptr::null());
    // SAFETY: libFuzzer hands over valid pointers to its argc and argv (argv[0..argc]
    // valid); the new array is leaked, so it lives as long as libFuzzer uses it.
    unsafe {
        let n = usize::try_from(*argc).unwrap_or(0);
        if n == 0 {
            return 0;
        }
        let old = std::slice::from_raw_parts(*argv, n);
        let mut new: Vec<*mut c_char> = Vec::with_capacity(n + DEFAULT_FLAGS.len() + 1);
        new.push(old[0]);
        new.extend(DEFAULT_FLAGS.iter().map(|f| f.as_ptr().cast_mut()));
        new.extend_from_slice(&old[1..]);
        // argv is terminated by a null pointer, as in C's main.
        new.push(std::ptr::null_mut());
        *argc = c_int::try_from(new.len() - 1).unwrap_or(*argc);
        *argv = Box::leak(new.into_boxed_slice()).as_mut_ptr();
    }
    0
}

/// What `fuzz_target!` would generate: libfuzzer-sys's `LLVMFuzzerTestOneInput` calls it
/// (declared there with this signature: Rust on both sides of the "C" boundary).
#[allow(improper_ctypes_definitions)]
#[unsafe(no_mangle)]
pub extern "C" fn rust_fuzzer_test_input(bytes: &[u8]) -> i32 {
    // `cargo fuzz fmt` asks for the input's debug formatting this way.
    if let Some(path) = libfuzzer_sys::rust_libfuzzer_debug_path() {
        use std::io::Write;
        let mut file =
            std::fs::File::create(path).expect("failed to create `RUST_LIBFUZZER_DEBUG_PATH` file");
        writeln!(&mut file, "{bytes:?}")
            .expect("failed to write to `RUST_LIBFUZZER_DEBUG_PATH` file");
        return 0;
    }
    session_pair(bytes);
    0
}

/// A frame named after this target in every backtrace (what `fuzz_target!` does too).
#[inline(never)]
fn session_pair(bytes: &[u8]) {
    run(bytes);
}
