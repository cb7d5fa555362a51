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
/// The first group is the `corral:tool/tool-component` world itself: the
/// only ways out. The rest is WASI that toolchains link whether or not the
/// tool uses it (Rust's adapter links stdio and exit; componentize-py's
/// CPython links the file system and sockets too). It is linked with
/// nothing behind it: no stdin, captured stdout and stderr, an empty
/// environment, no preopened directory, and every socket, socket address
/// and name lookup refused ([`null_wasi`]).
pub const ALLOWED_IMPORTS: &[&str] = &[
    "corral:tool/types",
    "corral:tool/workspace",
    "corral:tool/logging",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    // linked, with nothing behind it
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
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// The package versions a tool's imports may name: `corral:tool` at the
/// version of `wit/`, and WASI at any 0.2 release (the host's bindings
/// answer every 0.2.x import; 0.3 is another ABI).
fn version_allowed(name: &str) -> bool {
    let Some((path, version)) = name.split_once('@') else {
        return false;
    };
    if path.starts_with("corral:") {
        version == "0.1.0"
    } else {
        version.starts_with("0.2.")
    }
}

/// A WASI context with nothing behind it: no preopened directory, no
/// environment, no arguments, no network. wasmtime-wasi's builder allows
/// TCP and UDP by default (only its address check refuses); every switch
/// is turned off here, and the address check refuses everything too.
pub(crate) fn null_wasi(
    stderr: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
) -> wasmtime_wasi::WasiCtx {
    let mut b = wasmtime_wasi::WasiCtx::builder();
    b.stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    b.build()
}

/// The export every tool must have.
pub const TOOL_EXPORT: &str = "corral:tool/tool@0.1.0";

pub(crate) fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<CallState>> {
    let mut linker = Linker::<CallState>::new(engine);
    // All of WASI 0.2, answered by the null context of [`null_wasi`].
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let l = &mut linker;
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
/// or does not export the tool interface with `describe` and `call`;
/// returns its imports.
pub(crate) fn check_world(
    engine: &Engine,
    component: &Component,
) -> Result<Vec<String>, LoadError> {
    use wasmtime::component::types::ComponentItem;
    let ty = component.component_type();
    let mut imports = Vec::new();
    for (name, _) in ty.imports(engine) {
        let unversioned = name.split('@').next().unwrap_or(name);
        if !ALLOWED_IMPORTS.contains(&unversioned) || !version_allowed(name) {
            return Err(LoadError::ForbiddenImport {
                import: name.to_string(),
            });
        }
        imports.push(name.to_string());
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
    Ok(imports)
}
