use std::time::Duration;

/// Why a plugin could not be loaded. Each message names what does not fit, so
/// that a plugin author can act on it without reading the host's code.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly component: {reason}")]
    NotAComponent { reason: String },
    #[error("does not fit world callisto:plugin/plugin@0.1.0: {reason}")]
    WorldMismatch { reason: String },
    #[error("describe() failed: {0}")]
    Describe(#[source] CallError),
    #[error("invalid plugin name `{name}`: use 1-64 lowercase letters, digits and `-`")]
    InvalidName { name: String },
    #[error("the component calls itself `{described}` but is installed as `{name}`")]
    NameMismatch { name: String, described: String },
    #[error("`{name}` is a built-in plugin and cannot be replaced or removed")]
    Builtin { name: String },
    #[error("plugin `{name}` is not installed")]
    NotFound { name: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the plugin engine failed: {0}")]
    Engine(String),
}

/// Why a call into a plugin did not produce a result.
///
/// The variants are deliberately distinct: an operator fixes a plugin's own
/// error by changing the webhook's configuration or the plugin's logic, a
/// fault by fixing or replacing the plugin, and a host failure by looking at
/// the gateway.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The plugin ran and returned an error of its own.
    #[error("plugin {plugin}: {message}")]
    Returned { plugin: String, message: String },
    /// The plugin ran and returned a request the host will not send.
    #[error("plugin {plugin}: invalid request: {reason}")]
    InvalidOutput { plugin: String, reason: String },
    /// The plugin was stopped: a trap, the deadline, the memory cap.
    #[error("plugin {plugin} faulted: {fault}")]
    Fault { plugin: String, fault: Fault },
    /// The host could not run the plugin at all.
    #[error("host failed to run plugin {plugin}: {message}")]
    Host { plugin: String, message: String },
}

impl CallError {
    pub fn plugin(&self) -> &str {
        match self {
            CallError::Returned { plugin, .. }
            | CallError::InvalidOutput { plugin, .. }
            | CallError::Fault { plugin, .. }
            | CallError::Host { plugin, .. } => plugin,
        }
    }

    /// A short machine-readable kind, for metrics and the API.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Returned { .. } => "error",
            CallError::InvalidOutput { .. } => "invalid_output",
            CallError::Fault { fault, .. } => fault.kind(),
            CallError::Host { .. } => "host",
        }
    }
}

/// How a plugin was stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("timed out after {deadline:?}")]
    Timeout { deadline: Duration },
    #[error("exceeded its memory limit of {limit} bytes")]
    Memory { limit: usize },
    #[error("returned a body of {size} bytes, over the limit of {limit}")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("trapped: {message}")]
    Trap { message: String },
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Timeout { .. } => "timeout",
            Fault::Memory { .. } => "memory",
            Fault::BodyTooLarge { .. } => "body_too_large",
            Fault::Trap { .. } => "trap",
        }
    }
}
