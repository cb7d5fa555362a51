//! Host bindings for `corral:tool/tool-component`, generated from `wit/`.
//!
//! WASI packages map onto wasmtime-wasi's and wasmtime-wasi-http's own
//! bindings so that their implementations serve our world unchanged.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "corral:tool/tool-component",
    imports: { default: trappable },
    require_store_data_send: true,
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:random": wasmtime_wasi::p2::bindings::random,
    },
});

pub use corral::tool::types;
