//! The IETF draft (draft-ietf-httpapi-ratelimit-headers) `RateLimit` and
//! `RateLimit-Policy` fields of a response, from the rate and quota stores'
//! answers.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};

use crate::stores::rate::{RateDecision, ceil_secs, replenish_interval};
use crate::tenants::{QuotaPolicy, RateLimitPolicy};

/// The policies a tenant has (`RateLimit-Policy`) and what is left of each
/// (`RateLimit`). `burst` is the request-rate window; `daily` the executions
/// quota.
pub fn headers(
    rate: Option<(&RateLimitPolicy, &RateDecision)>,
    quota: Option<(&QuotaPolicy, u64, Duration)>,
) -> HeaderMap {
    let mut policies = Vec::new();
    let mut states = Vec::new();
    if let Some((policy, decision)) = rate {
        let window = ceil_secs(replenish_interval(policy) * policy.burst).max(1);
        policies.push(format!("\"burst\";q={};w={window}", policy.burst));
        states.push(format!(
            "\"burst\";r={};t={}",
            decision.remaining,
            ceil_secs(if decision.allowed {
                decision.reset
            } else {
                decision.retry_after
            })
        ));
    }
    if let Some((policy, used, resets_in)) = quota {
        if let Some(limit) = policy.executions_per_day {
            policies.push(format!("\"daily\";q={limit};w=86400"));
            states.push(format!(
                "\"daily\";r={};t={}",
                limit.saturating_sub(used),
                ceil_secs(resets_in)
            ));
        }
    }
    let mut map = HeaderMap::new();
    if !policies.is_empty() {
        let join = |items: Vec<String>| {
            HeaderValue::from_str(&items.join(", ")).expect("ASCII header value")
        };
        map.insert("ratelimit-policy", join(policies));
        map.insert("ratelimit", join(states));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_the_draft_syntax() {
        let policy = RateLimitPolicy {
            requests_per_second: 2.0,
            burst: 10,
            on_failure: Default::default(),
        };
        let decision = RateDecision {
            allowed: true,
            remaining: 7,
            reset: Duration::from_millis(1500),
            retry_after: Duration::ZERO,
        };
        let quota = QuotaPolicy {
            executions_per_day: Some(100),
            ..QuotaPolicy::default()
        };
        let h = headers(
            Some((&policy, &decision)),
            Some((&quota, 40, Duration::from_secs(3600))),
        );
        assert_eq!(
            h["ratelimit-policy"],
            "\"burst\";q=10;w=5, \"daily\";q=100;w=86400"
        );
        assert_eq!(h["ratelimit"], "\"burst\";r=7;t=2, \"daily\";r=60;t=3600");
    }
}
