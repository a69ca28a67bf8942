//! Headers on the way through: what belongs to one connection stays there,
//! URLs that point at the upstream are turned to point at the proxy, and
//! the pusher's name is read (never checked: the registry authenticates).

use base64::Engine;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 7.6.1),
/// and `Proxy-*` credentials meant for us, not the registry.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, the standard ones and those `Connection`
/// names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Rewrites `Location` and `Link` values that point at `upstream` (its
/// origin, `http://host:port`) to point at `proxy` instead, so that a client
/// continuing an upload (or paging a list) stays on the proxy. Relative
/// URLs and URLs elsewhere (a redirect to object storage) are left alone.
pub fn rewrite_urls(headers: &mut HeaderMap, upstream: &str, proxy: &str) {
    if let Some(value) = headers.get(header::LOCATION)
        && let Some(rewritten) = rewrite(value, upstream, proxy, false)
    {
        headers.insert(header::LOCATION, rewritten);
    }
    let links: Vec<HeaderValue> = headers.get_all(header::LINK).iter().cloned().collect();
    if links.iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.trim_start().starts_with(&format!("<{upstream}")))
    }) {
        headers.remove(header::LINK);
        for value in links {
            let value = rewrite(&value, upstream, proxy, true).unwrap_or(value);
            headers.append(header::LINK, value);
        }
    }
}

fn rewrite(
    value: &HeaderValue,
    upstream: &str,
    proxy: &str,
    bracketed: bool,
) -> Option<HeaderValue> {
    let s = value.to_str().ok()?;
    let (prefix, url) = if bracketed {
        let start = s.find('<')?;
        (&s[..=start], &s[start + 1..])
    } else {
        ("", s)
    };
    let rest = url.strip_prefix(upstream)?;
    // `http://host:5000` must not match `http://host:50001/...`.
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') || rest.starts_with('>'))
    {
        return None;
    }
    HeaderValue::from_str(&format!("{prefix}{proxy}{rest}")).ok()
}

/// The user name the request's credentials carry: the user of HTTP Basic
/// auth, or the `sub` claim of a bearer JWT (read, not verified: the
/// registry verified it before it answered 2xx, and the name is only
/// reported).
pub fn user_name(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    let name = if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        decoded.split_once(':').map(|(user, _)| user.to_owned())?
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let payload = credentials.split('.').nth(1)?;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
        claims.get("sub")?.as_str()?.to_owned()
    } else {
        return None;
    };
    let name = name.trim();
    (!name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control))
        .then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_go_and_the_rest_stays() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::RANGE, "bytes=0-9".parse().unwrap());
        h.insert(header::WWW_AUTHENTICATE, "Basic realm=x".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["range", "www-authenticate"]);
    }

    #[test]
    fn upstream_urls_point_at_the_proxy() {
        let up = "http://127.0.0.1:5000";
        let px = "http://proxy.example:5001";
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x"
                .parse()
                .unwrap(),
        );
        h.append(
            header::LINK,
            "<http://127.0.0.1:5000/v2/_catalog?last=a&n=1>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        rewrite_urls(&mut h, up, px);
        assert_eq!(
            h[header::LOCATION],
            "http://proxy.example:5001/v2/a/blobs/uploads/u?_state=x"
        );
        assert_eq!(
            h[header::LINK],
            "<http://proxy.example:5001/v2/_catalog?last=a&n=1>; rel=\"next\""
        );

        for untouched in [
            "/v2/a/blobs/uploads/u",
            "https://s3.example/bucket/blob",
            "http://127.0.0.1:50001/v2/",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, untouched.parse().unwrap());
            rewrite_urls(&mut h, up, px);
            assert_eq!(h[header::LOCATION], untouched);
        }
    }

    #[test]
    fn the_user_comes_from_basic_auth_or_the_tokens_subject() {
        let mut h = HeaderMap::new();
        assert_eq!(user_name(&h), None);
        h.insert(
            header::AUTHORIZATION,
            "Basic YWxpY2U6czNjcmV0".parse().unwrap(),
        );
        assert_eq!(user_name(&h).as_deref(), Some("alice"));
        // {"alg":"none"} . {"sub":"bob","access":[]} . (no signature checked)
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"bob","access":[]}"#);
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer eyJhbGciOiJub25lIn0.{payload}.c2ln")
                .parse()
                .unwrap(),
        );
        assert_eq!(user_name(&h).as_deref(), Some("bob"));
        h.insert(
            header::AUTHORIZATION,
            "Bearer opaque-token".parse().unwrap(),
        );
        assert_eq!(user_name(&h), None);
    }
}
