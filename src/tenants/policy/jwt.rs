//! `spec.auth.jwt`: the issuer, audience, algorithm and key a tenant's
//! tokens are checked against, validated when the file is read.

use std::path::Path;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::schema::JwtSpec;
use crate::tenants::JwtPolicy;

pub(super) fn jwt_policy(spec: JwtSpec, base: &Path) -> Result<JwtPolicy, String> {
    let field = "spec.auth.jwt";
    if spec.issuer.trim().is_empty() {
        return Err(format!(
            "{field}.issuer: must not be empty; tokens are routed to their tenant by `iss`"
        ));
    }
    if spec.algorithms.is_empty() {
        return Err(format!(
            "{field}.algorithms: list at least one algorithm, e.g. [RS256]"
        ));
    }
    let mut algorithms = Vec::new();
    for (i, name) in spec.algorithms.iter().enumerate() {
        let alg: Algorithm = name.parse().map_err(|_| {
            format!("{field}.algorithms[{i}]: `{name}` is not a supported algorithm (HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA; never none)")
        })?;
        algorithms.push(alg);
    }
    let family = algorithms[0].family();
    if algorithms.iter().any(|a| a.family() != family) {
        return Err(format!(
            "{field}.algorithms: all algorithms must use one kind of key (HMAC, RSA, EC or Ed25519), since the tenant has one key"
        ));
    }
    let sources = [
        spec.hmac_secret_env.is_some(),
        spec.hmac_secret_file.is_some(),
        spec.public_key_file.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(format!(
            "{field}: set exactly one of hmacSecretEnv, hmacSecretFile or publicKeyFile"
        ));
    }
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let (key, hmac_secret) = if family == AlgorithmFamily::Hmac {
        let secret = if let Some(var) = &spec.hmac_secret_env {
            std::env::var(var).map_err(|_| {
                format!("{field}.hmacSecretEnv: the environment variable `{var}` is not set")
            })?
        } else if let Some(file) = &spec.hmac_secret_file {
            std::fs::read_to_string(resolve(file))
                .map_err(|e| format!("{field}.hmacSecretFile: cannot read it: {e}"))?
                .trim_end_matches(['\n', '\r'])
                .to_string()
        } else {
            return Err(format!(
                "{field}.publicKeyFile: {:?} needs an HMAC secret (hmacSecretEnv or hmacSecretFile), not a public key",
                algorithms[0]
            ));
        };
        // RFC 7518 §3.2: the key must be at least as long as the hash.
        if secret.len() < 32 {
            return Err(format!(
                "{field}: the HMAC secret must be at least 32 bytes long"
            ));
        }
        (
            DecodingKey::from_secret(secret.as_bytes()),
            Some(secret.into_bytes()),
        )
    } else {
        let Some(file) = &spec.public_key_file else {
            return Err(format!(
                "{field}: {:?} needs publicKeyFile (a PEM public key), not an HMAC secret",
                algorithms[0]
            ));
        };
        let pem = std::fs::read(resolve(file))
            .map_err(|e| format!("{field}.publicKeyFile: cannot read it: {e}"))?;
        let key = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
            _ => DecodingKey::from_ed_pem(&pem),
        }
        .map_err(|e| {
            format!("{field}.publicKeyFile: not a PEM public key for {family:?} algorithms: {e}")
        })?;
        (key, None)
    };
    Ok(JwtPolicy {
        issuer: spec.issuer,
        audience: spec.audience,
        algorithms,
        key,
        hmac_secret,
    })
}
