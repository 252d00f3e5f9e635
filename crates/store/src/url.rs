//! Database URLs may carry a password (`postgres://user:secret@host/db`,
//! `?password=secret`); nothing the store logs or returns may show it.

const MASK: &str = "***";

/// Query parameters whose value is a secret.
const SECRET_PARAMS: &[&str] = &["password", "sslpassword"];

/// The URL with any password replaced by `***`, safe to log or show.
pub fn mask_url(url: &str) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let mut out = mask_userinfo(base);
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query.split('&').map(mask_param).collect();
        out.push_str(&params.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn mask_userinfo(base: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    // The last '@' ends the user info: a password may itself contain '@'.
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return base.to_owned();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:{MASK}"),
        None => userinfo.to_owned(),
    };
    format!("{scheme}://{user}@{host}{path}")
}

fn mask_param(param: &str) -> String {
    match param.split_once('=') {
        Some((key, _)) if SECRET_PARAMS.iter().any(|s| key.eq_ignore_ascii_case(s)) => {
            format!("{key}={MASK}")
        }
        _ => param.to_owned(),
    }
}

/// Removes the URL's password from a message produced by a driver, which may
/// quote the URL it was given.
pub(crate) fn scrub(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &mask_url(url));
    for secret in secrets_in(url) {
        if !secret.is_empty() {
            out = out.replace(secret, MASK);
        }
    }
    out
}

/// `what` went wrong with the database at `url`, in a message that names the
/// database without its password.
pub(crate) fn unavailable(
    url: &str,
    what: &str,
    error: &dyn std::fmt::Display,
) -> keyhold_core::StoreError {
    keyhold_core::StoreError::Unavailable(scrub(&format!("{what} {}: {error}", mask_url(url)), url))
}

fn secrets_in(url: &str) -> Vec<&str> {
    let mut secrets = Vec::new();
    let before_fragment = url.split('#').next().unwrap_or_default();
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    if let Some((_, rest)) = base.split_once("://") {
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            secrets.push(password);
        }
    }
    for param in query.into_iter().flat_map(|q| q.split('&')) {
        if let Some((key, value)) = param.split_once('=')
            && SECRET_PARAMS.iter().any(|s| key.eq_ignore_ascii_case(s))
        {
            secrets.push(value);
        }
    }
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://keyhold:s3cr%40t@db.internal:5432/keyhold?sslmode=require"),
            "postgres://keyhold:***@db.internal:5432/keyhold?sslmode=require"
        );
        assert_eq!(
            mask_url("postgres://u:p@ss@host/db"),
            "postgres://u:***@host/db"
        );
        assert_eq!(
            mask_url("postgres://host/db?user=k&password=hunter2&sslpassword=x"),
            "postgres://host/db?user=k&password=***&sslpassword=***"
        );
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        for url in [
            "sqlite:///var/lib/keyhold/keyhold.db?mode=rwc",
            "sqlite://data/keyhold.db",
            "/var/lib/keyhold/keyhold.db",
            "postgres://keyhold@db/keyhold",
            "sqlite::memory:",
        ] {
            assert_eq!(mask_url(url), url);
        }
    }

    #[test]
    fn scrub_removes_the_password_wherever_it_is_quoted() {
        let url = "postgres://u:hunter2@host/db";
        let message = format!("cannot connect to {url}: password hunter2 refused");
        let scrubbed = scrub(&message, url);
        assert!(!scrubbed.contains("hunter2"), "{scrubbed}");
    }
}
