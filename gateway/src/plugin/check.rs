//! Does a component fit the `callisto:plugin/plugin@0.1.0` world? Checked at
//! load time, with a message that names each missing export and each import
//! the host does not provide, before wasmtime's own type check.

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::error::LoadError;

const EXPORTS: [&str; 4] = ["describe", "validate-config", "filter", "format"];
/// Exports the host knows beyond `EXPORTS` (world `plugin-with-handle`).
const OPTIONAL_EXPORTS: [&str; 1] = ["callisto:plugin/handler@0.1.0"];
const TYPES_INTERFACE: &str = "callisto:plugin/types@0.1.0";

pub(crate) fn check_world(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    let mut problems = Vec::new();

    let exports: Vec<(String, ComponentItem)> = ty
        .exports(engine)
        .map(|(name, item)| (name.to_owned(), item.ty))
        .collect();
    for name in EXPORTS {
        match exports.iter().find(|(n, _)| n == name) {
            Some((_, ComponentItem::ComponentFunc(_))) => {}
            Some(_) => problems.push(format!("export `{name}` is not a function")),
            None => problems.push(format!("missing export `{name}`")),
        }
    }

    for (name, item) in &exports {
        if OPTIONAL_EXPORTS.contains(&name.as_str())
            && !matches!(item, ComponentItem::ComponentInstance(_))
        {
            problems.push(format!("export `{name}` is not an interface"));
        }
    }

    for (name, _) in ty.imports(engine) {
        let provided = name == "log" || name == TYPES_INTERFACE || name.starts_with("wasi:");
        if !provided {
            let hint = if name.starts_with("callisto:plugin/") {
                " (this host speaks callisto:plugin@0.1.0)"
            } else {
                ""
            };
            problems.push(format!(
                "imports `{name}`, which the host does not provide{hint}"
            ));
        }
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(LoadError::WorldMismatch {
            reason: problems.join("; "),
        })
    }
}
