//! The export macros: turn a [`MatchingModule`](crate::MatchingModule) or a
//! [`PositionModule`](crate::PositionModule) type into the `extern "C"`
//! functions of the ABI. This is the only place guest code touches raw
//! pointers, and it exists only when compiling to wasm32, so a plugin crate
//! stays an ordinary library natively (and several plugins can be linked into
//! one native test binary without symbol clashes).

/// Export a matching module's type as a wasm module's ABI.
///
/// ```ignore
/// pub struct MyBook { /* ... */ }
/// impl exhost_guest_sdk::MatchingModule for MyBook { /* ... */ }
/// exhost_guest_sdk::export_matching_module!(MyBook);
/// ```
#[macro_export]
macro_rules! export_matching_module {
    ($module:ty) => {
        $crate::__export_module!($crate::abi::MatchingAbi, $module);
    };
}

/// Export a position module's type as a wasm module's ABI.
#[macro_export]
macro_rules! export_position_module {
    ($module:ty) => {
        $crate::__export_module!($crate::abi::PositionAbi, $module);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_module {
    ($abi:ty, $module:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::guest::{Guest, GuestCell};

            static GUEST: GuestCell<Guest<$abi, $module>> = GuestCell::new(Guest::new());

            fn guest() -> &'static mut Guest<$abi, $module> {
                $crate::guest::install_panic_hook();
                // SAFETY: the host calls one export at a time on the guest's only thread,
                // and no export keeps the reference past its return.
                unsafe { GUEST.get() }
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn exhost_abi_version() -> u32 {
                $crate::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn exhost_module_kind() -> u32 {
                <$abi as $crate::abi::Abi>::KIND.code()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn exhost_state_version() -> u32 {
                <$module as $crate::abi::Rules<$abi>>::STATE_VERSION
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn exhost_abi_revision() -> u32 {
                $crate::abi::ABI_REVISION
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn exhost_input(len: u32) -> u32 {
                guest().input(len).as_mut_ptr() as usize as u32
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn exhost_output() -> u64 {
                let output = guest().output();
                $crate::abi::pack_region(output.as_ptr() as usize as u32, output.len() as u32)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn exhost_init(len: u32) -> u32 {
                guest().init(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn exhost_apply(offset: u32, len: u32) -> u32 {
                guest().apply(offset, len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn exhost_query(len: u32) -> u32 {
                guest().query(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn exhost_snapshot() -> u32 {
                guest().snapshot()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn exhost_restore(len: u32) -> u32 {
                guest().restore(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn exhost_migrate(from_version: u32, len: u32) -> u32 {
                guest().migrate(from_version, len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn exhost_panic_message() -> u64 {
                // SAFETY: single-threaded guest; the hook is not running during this call.
                let message = unsafe { $crate::guest::PANIC_MESSAGE.get() };
                $crate::abi::pack_region(message.as_ptr() as usize as u32, message.len() as u32)
            }
        };
    };
}
