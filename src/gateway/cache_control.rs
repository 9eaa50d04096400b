//! HTTP caching of `/execute` answers as RFC 9111 and RFC 9211 describe it:
//! what a request's `Cache-Control` asks of the result cache, and how the
//! answer says what the cache did (`Cache-Status`, `Age`, and `X-Cache` for
//! the original API's clients).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use headers::{CacheControl, HeaderMapExt};

/// What the client's `Cache-Control` asks of a stored answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-store`: neither use nor keep a stored answer.
    pub no_store: bool,
    /// The oldest stored answer the client accepts; `no-cache` is `max-age=0`
    /// (RFC 9111 §5.2.1.4: a stored answer must not be used unvalidated, so
    /// the script runs again and its answer replaces the stored one).
    pub max_age: Option<Duration>,
}

impl RequestDirectives {
    pub fn of(headers: &HeaderMap) -> Self {
        let Some(directives) = headers.typed_get::<CacheControl>() else {
            return Self::default();
        };
        let max_age = if directives.no_cache() {
            Some(Duration::ZERO)
        } else {
            directives.max_age()
        };
        Self {
            no_store: directives.no_store(),
            max_age,
        }
    }

    /// Whether a stored answer of this age may be served.
    pub fn accepts(&self, age: Duration) -> bool {
        self.max_age.is_none_or(|max| age <= max)
    }
}

/// What the result cache did for one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheAnswer {
    /// Served from the cache: its age and how long it stays.
    Hit { age: Duration, ttl_left: Duration },
    /// Not stored (or not for this tenant): ran and stored.
    Miss,
    /// The client's directives sent it to the script: ran, and stored
    /// unless it said `no-store`.
    Forwarded { stored: bool },
    /// The cache is off for this server, tenant or request body.
    Bypass,
}

/// The cache's name in `Cache-Status`.
const CACHE_NAME: &str = "pyexec";

impl CacheAnswer {
    /// `X-Cache`, as the original API's clients read it.
    pub fn x_cache(self) -> &'static str {
        match self {
            CacheAnswer::Hit { .. } => "HIT",
            CacheAnswer::Miss | CacheAnswer::Forwarded { stored: true } => "MISS",
            CacheAnswer::Forwarded { stored: false } | CacheAnswer::Bypass => "BYPASS",
        }
    }

    /// The label of metrics and spans (`hit`, `miss`, `bypass`).
    pub fn label(self) -> &'static str {
        match self.x_cache() {
            "HIT" => "hit",
            "MISS" => "miss",
            _ => "bypass",
        }
    }

    /// The RFC 9211 `Cache-Status` member of this cache.
    pub fn cache_status(self) -> String {
        match self {
            CacheAnswer::Hit { ttl_left, .. } => {
                format!("{CACHE_NAME}; hit; ttl={}", ttl_left.as_secs())
            }
            CacheAnswer::Miss => format!("{CACHE_NAME}; fwd=miss; stored"),
            CacheAnswer::Forwarded { stored: true } => format!("{CACHE_NAME}; fwd=request; stored"),
            CacheAnswer::Forwarded { stored: false } => format!("{CACHE_NAME}; fwd=request"),
            CacheAnswer::Bypass => format!("{CACHE_NAME}; fwd=bypass"),
        }
    }

    /// `X-Cache`, `Cache-Status` and, on a hit, `Age` (whole seconds).
    pub fn headers(self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-cache", HeaderValue::from_static(self.x_cache()));
        headers.insert(
            "cache-status",
            HeaderValue::from_str(&self.cache_status()).expect("ASCII"),
        );
        if let CacheAnswer::Hit { age, .. } = self {
            headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directives(value: &str) -> RequestDirectives {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(value).unwrap());
        RequestDirectives::of(&headers)
    }

    #[test]
    fn request_directives_follow_rfc_9111() {
        assert_eq!(
            RequestDirectives::of(&HeaderMap::new()),
            RequestDirectives::default()
        );
        let no_cache = directives("no-cache");
        assert!(!no_cache.no_store && !no_cache.accepts(Duration::from_millis(1)));
        assert!(no_cache.accepts(Duration::ZERO));
        assert!(!directives("max-age=0").accepts(Duration::from_secs(1)));
        let ten = directives("max-age=10");
        assert!(ten.accepts(Duration::from_secs(10)) && !ten.accepts(Duration::from_secs(11)));
        assert!(directives("no-store").no_store);
        assert!(directives("no-store, max-age=5").no_store);
        // Unknown or malformed directives ask for nothing.
        assert!(directives("whatever").accepts(Duration::from_secs(3600)));
    }

    #[test]
    fn each_answer_names_itself_in_rfc_9211_terms_and_for_old_clients() {
        let hit = CacheAnswer::Hit {
            age: Duration::from_secs(7),
            ttl_left: Duration::from_secs(293),
        };
        let headers = hit.headers();
        assert_eq!(headers["x-cache"], "HIT");
        assert_eq!(headers["cache-status"], "pyexec; hit; ttl=293");
        assert_eq!(headers["age"], "7");
        for (answer, x_cache, status) in [
            (CacheAnswer::Miss, "MISS", "pyexec; fwd=miss; stored"),
            (
                CacheAnswer::Forwarded { stored: true },
                "MISS",
                "pyexec; fwd=request; stored",
            ),
            (
                CacheAnswer::Forwarded { stored: false },
                "BYPASS",
                "pyexec; fwd=request",
            ),
            (CacheAnswer::Bypass, "BYPASS", "pyexec; fwd=bypass"),
        ] {
            let headers = answer.headers();
            assert_eq!(headers["x-cache"], x_cache);
            assert_eq!(headers["cache-status"], status);
            assert!(headers.get("age").is_none());
        }
    }
}
