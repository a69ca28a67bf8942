//! Repository names as users type them, normalised so that `alpine`,
//! `docker.io/library/alpine` and `registry-1.docker.io/library/alpine` are
//! one repository.

/// The host Docker Hub's registry API answers on.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// Names Docker Hub goes by.
const DOCKER_HUB_ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// `(registry, repository)` for what a user typed. A first path component
/// with a `.` or `:`, or `localhost`, is a registry host; otherwise the
/// registry is Docker Hub, where one-component names live under `library/`.
pub fn normalize(name: &str, registry: Option<&str>) -> Result<(String, String), String> {
    let name = name.trim().trim_matches('/');
    let (registry, path) = match registry.map(str::trim).filter(|r| !r.is_empty()) {
        Some(registry) => (registry.to_owned(), name.to_owned()),
        None => match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        },
    };
    let registry = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_ascii_lowercase();
    if registry.is_empty() || registry.contains('/') {
        return Err(format!("registry `{registry}` is not a host name"));
    }
    let registry = if DOCKER_HUB_ALIASES.contains(&registry.as_str()) {
        DOCKER_HUB.to_owned()
    } else {
        registry
    };
    let path = if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    Ok((registry, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, registry: Option<&str>) -> (String, String) {
        normalize(name, registry).unwrap()
    }

    #[test]
    fn docker_hub_names_are_one_repository() {
        let want = (DOCKER_HUB.to_owned(), "library/alpine".to_owned());
        assert_eq!(n("alpine", None), want);
        assert_eq!(n("library/alpine", None), want);
        assert_eq!(n("docker.io/library/alpine", None), want);
        assert_eq!(n("registry-1.docker.io/library/alpine", None), want);
        assert_eq!(n("index.docker.io/alpine", None), want);
        assert_eq!(n("alpine", Some("docker.io")), want);
        assert_eq!(
            n("bitnami/redis", None),
            (DOCKER_HUB.into(), "bitnami/redis".into())
        );
    }

    #[test]
    fn other_registries_by_host() {
        assert_eq!(
            n("ghcr.io/owner/image", None),
            ("ghcr.io".into(), "owner/image".into())
        );
        assert_eq!(
            n("quay.io/coreos/etcd", None),
            ("quay.io".into(), "coreos/etcd".into())
        );
        assert_eq!(
            n("127.0.0.1:5000/demo/app", None),
            ("127.0.0.1:5000".into(), "demo/app".into())
        );
        assert_eq!(
            n("localhost/demo", None),
            ("localhost".into(), "demo".into())
        );
        assert_eq!(
            n("demo/app", Some("https://Registry.Example.com/")),
            ("registry.example.com".into(), "demo/app".into())
        );
        assert!(normalize("x", Some("a/b")).is_err());
    }
}
