use crate::Config;

/// The webhook a call is for. Its secret is deliberately not here: the host
/// signs what the plugin returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The gateway's id, e.g. `wh_01JDQ8...`.
    pub id: String,
    pub url: String,
    pub config: Config,
}
