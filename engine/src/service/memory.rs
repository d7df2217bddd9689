//! The memory bounds of `sluice run`, from the environment: sled's page
//! cache (`SLUICE_STORE_CACHE_MB`) and the engine's cache of user records
//! (`SLUICE_USER_CACHE_MB`, their encoded size; decoded they take about
//! three to four times as much). Both are bounded caches that fill up to
//! their bound and stay there; everything else the service keeps in memory
//! is bounded by count (queues, the outbox hand-off, a round's commands).

/// sled's page cache by default, in MiB (sled's own default is 1 GiB).
/// 16 MiB saves ~28 MB of RSS on the ping soak but ingests ~15% slower
/// (BENCHMARKS.md, issue 9).
pub const STORE_CACHE_MB: u64 = 32;
/// The user records' cache by default, in MiB (encoded).
pub const USER_CACHE_MB: u64 = 32;

pub const STORE_CACHE_VAR: &str = "SLUICE_STORE_CACHE_MB";
pub const USER_CACHE_VAR: &str = "SLUICE_USER_CACHE_MB";

/// The largest value taken, in MiB.
const MAX_MB: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("${var} must be a whole number of megabytes from 1 to {MAX_MB}, not {value:?}")]
pub struct BadSetting {
    pub var: &'static str,
    pub value: String,
}

/// The bounds in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub store_cache_bytes: u64,
    pub user_cache_bytes: usize,
}

impl Bounds {
    /// From the process's environment.
    pub fn from_env() -> Result<Bounds, BadSetting> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From `get` (a variable's value, when set).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Bounds, BadSetting> {
        let mb = |var: &'static str, default: u64| -> Result<u64, BadSetting> {
            let Some(value) = get(var) else {
                return Ok(default);
            };
            match value.trim().parse::<u64>() {
                Ok(n) if (1..=MAX_MB).contains(&n) => Ok(n),
                _ => Err(BadSetting { var, value }),
            }
        };
        let store = mb(STORE_CACHE_VAR, STORE_CACHE_MB)?;
        let users = mb(USER_CACHE_VAR, USER_CACHE_MB)?;
        Ok(Bounds {
            store_cache_bytes: store << 20,
            user_cache_bytes: usize::try_from(users << 20).unwrap_or(usize::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_and_settings() {
        let d = Bounds::from_vars(vars(&[])).expect("defaults");
        assert_eq!(d.store_cache_bytes, STORE_CACHE_MB << 20);
        assert_eq!(d.user_cache_bytes as u64, USER_CACHE_MB << 20);
        let s = Bounds::from_vars(vars(&[(STORE_CACHE_VAR, "64"), (USER_CACHE_VAR, " 8 ")]))
            .expect("set");
        assert_eq!(s.store_cache_bytes, 64 << 20);
        assert_eq!(s.user_cache_bytes, 8 << 20);
    }

    #[test]
    fn a_bad_setting_names_its_variable() {
        for bad in ["", "0", "-1", "1.5", "lots", "99999999999"] {
            let e = Bounds::from_vars(vars(&[(USER_CACHE_VAR, bad)])).expect_err(bad);
            assert_eq!(e.var, USER_CACHE_VAR);
            assert!(e.to_string().contains("$SLUICE_USER_CACHE_MB"), "{e}");
        }
    }
}
