//! What a tool may import and must export: the linker with exactly the
//! `corral:tool` world's interfaces (and the WASI plumbing toolchains
//! link, given nothing behind it), and the check every component passes
//! before it is instantiated.

use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use crate::call_state::CallState;
use crate::error::LoadError;

/// The interfaces a tool may import, by name without version. Anything
/// else is refused at load time with a message naming it.
///
/// The first group is the `corral:tool/tool-component` world itself; the
/// second is plumbing that Rust's (and other toolchains') WASI adapters
/// import even when unused, given harmless implementations: no stdin,
/// captured stdout/stderr, an empty environment, no terminal.
pub const ALLOWED_IMPORTS: &[&str] = &[
    "corral:tool/types",
    "corral:tool/workspace",
    "corral:tool/logging",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    // plumbing
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
];

/// The export every tool must have.
pub const TOOL_EXPORT: &str = "corral:tool/tool@0.1.0";

pub(crate) fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<CallState>> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::p2::bindings::cli;
    use wasmtime_wasi::random::{WasiRandom, WasiRandomView};

    let mut linker = Linker::<CallState>::new(engine);
    // io, wall and monotonic clocks, random, stdin/stdout/stderr.
    wasmtime_wasi::p2::add_to_linker_proxy_interfaces_sync(&mut linker)?;
    let l = &mut linker;
    wasmtime_wasi::p2::bindings::random::insecure::add_to_linker::<CallState, WasiRandom>(
        l,
        |t| <CallState as WasiRandomView>::random(t),
    )?;
    wasmtime_wasi::p2::bindings::random::insecure_seed::add_to_linker::<CallState, WasiRandom>(
        l,
        |t| <CallState as WasiRandomView>::random(t),
    )?;
    cli::exit::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    cli::environment::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    cli::terminal_input::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    cli::terminal_output::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    cli::terminal_stdin::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    cli::terminal_stdout::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    cli::terminal_stderr::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(l)?;
    crate::bindings::corral::tool::types::add_to_linker::<CallState, HasSelf<CallState>>(l, |s| s)?;
    crate::bindings::corral::tool::workspace::add_to_linker::<CallState, HasSelf<CallState>>(
        l,
        |s| s,
    )?;
    crate::bindings::corral::tool::logging::add_to_linker::<CallState, HasSelf<CallState>>(
        l,
        |s| s,
    )?;
    Ok(linker)
}

/// Refuses a component that imports anything outside [`ALLOWED_IMPORTS`]
/// or does not export the tool interface with `describe` and `call`.
pub(crate) fn check_world(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    use wasmtime::component::types::ComponentItem;
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        let unversioned = name.split('@').next().unwrap_or(name);
        if !ALLOWED_IMPORTS.contains(&unversioned) {
            return Err(LoadError::ForbiddenImport {
                import: name.to_string(),
            });
        }
    }
    let exports: Vec<(String, ComponentItem)> = ty
        .exports(engine)
        .map(|(n, e)| (n.to_string(), e.ty))
        .collect();
    let Some((_, item)) = exports.iter().find(|(n, _)| n == TOOL_EXPORT) else {
        let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
        return Err(LoadError::WrongWorld {
            missing: format!(
                "it does not export `{TOOL_EXPORT}` (it exports: {})",
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                }
            ),
        });
    };
    let ComponentItem::ComponentInstance(inst) = item else {
        return Err(LoadError::WrongWorld {
            missing: format!("its export `{TOOL_EXPORT}` is not an interface instance"),
        });
    };
    let funcs: Vec<String> = inst.exports(engine).map(|(n, _)| n.to_string()).collect();
    for required in ["describe", "call"] {
        if !funcs.iter().any(|f| f == required) {
            return Err(LoadError::WrongWorld {
                missing: format!("its `{TOOL_EXPORT}` export has no `{required}` function"),
            });
        }
    }
    Ok(())
}
