//! The jails' seccomp policies, composed by code from the named rule groups
//! of `nsjail/seccomp.kafel`.
//!
//! The file defines each group once (`POLICY pyexec_… { … }`) and says
//! nothing about which jail uses which: that is [`RuleGroup::binds`]. The
//! cold jail runs under every group. The warm zygote must create a user,
//! mount and pid namespace for each runner and mount its `/proc` and `/tmp`,
//! so it runs without the namespace and mount groups, and every runner
//! imposes those on itself before it runs a script (`FORBIDDEN_AFTER_SETUP`
//! in `nsjail/zygote.py`; filters stack and can only tighten). A test below
//! checks that the runner's list covers both groups call by call.

/// One `POLICY` of `nsjail/seccomp.kafel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RuleGroup {
    Kill,
    NoNewNamespaces,
    NoMounts,
    NoKernelInterfaces,
    NoSockets,
}

/// A jail that runs under a seccomp policy of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Jail {
    /// A cold run, and (stacked under the runner's own filter) a warm one.
    Cold,
    /// The warm zygote, which builds each runner's namespaces.
    Zygote,
}

impl RuleGroup {
    pub(super) const ALL: [RuleGroup; 5] = [
        RuleGroup::Kill,
        RuleGroup::NoNewNamespaces,
        RuleGroup::NoMounts,
        RuleGroup::NoKernelInterfaces,
        RuleGroup::NoSockets,
    ];

    /// Its name in the kafel file.
    pub(super) fn policy_name(self) -> &'static str {
        match self {
            RuleGroup::Kill => "pyexec_kill",
            RuleGroup::NoNewNamespaces => "pyexec_no_new_namespaces",
            RuleGroup::NoMounts => "pyexec_no_mounts",
            RuleGroup::NoKernelInterfaces => "pyexec_no_kernel_interfaces",
            RuleGroup::NoSockets => "pyexec_no_sockets",
        }
    }

    /// Whether `jail` runs under this group.
    pub(super) fn binds(self, jail: Jail) -> bool {
        match jail {
            Jail::Cold => true,
            Jail::Zygote => !matches!(self, RuleGroup::NoNewNamespaces | RuleGroup::NoMounts),
        }
    }
}

/// The whole policy of `jail`: the rule groups, then the `USE` list of the
/// ones it runs under, over a default of allow.
pub(super) fn policy(rule_groups: &str, jail: Jail) -> String {
    let uses: Vec<String> = RuleGroup::ALL
        .iter()
        .filter(|group| group.binds(jail))
        .map(|group| format!("USE {}", group.policy_name()))
        .collect();
    format!(
        "{}\n\n{}\nDEFAULT ALLOW\n",
        rule_groups.trim_end(),
        uses.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE_GROUPS: &str = include_str!("../../nsjail/seccomp.kafel");

    /// The text of `POLICY name { … }`, up to the next `POLICY`.
    fn group_body(name: &str) -> &'static str {
        let start = RULE_GROUPS
            .find(&format!("POLICY {name} {{"))
            .unwrap_or_else(|| panic!("seccomp.kafel defines no {name}"));
        let rest = &RULE_GROUPS[start + 1..];
        &RULE_GROUPS[start..start + 1 + rest.find("\nPOLICY ").unwrap_or(rest.len())]
    }

    /// The system calls a group names, outside comments and `SYSCALL[…]`.
    fn named_calls(body: &str) -> Vec<&str> {
        body.lines()
            .map(|line| line.split("//").next().unwrap())
            .flat_map(|line| line.split([',', '{', '}', ' ', '(', ')']))
            .map(str::trim)
            .filter(|word| {
                !word.is_empty()
                    && word
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    && word.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            })
            .filter(|word| !word.starts_with("pyexec_"))
            .filter(|word| !["flags", "stack", "ptid", "ctid", "tls"].contains(word))
            .collect()
    }

    #[test]
    fn the_file_defines_every_group_and_chooses_none() {
        let defined: Vec<&str> = RULE_GROUPS
            .lines()
            .filter_map(|l| l.strip_prefix("POLICY "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let known: Vec<&str> = RuleGroup::ALL.iter().map(|g| g.policy_name()).collect();
        assert_eq!(defined, known);
        // Which jail uses which group is this module's, not the file's.
        let code = RULE_GROUPS
            .lines()
            .map(str::trim_start)
            .filter(|l| !l.starts_with("//"));
        assert!(
            !code
                .clone()
                .any(|l| l.starts_with("USE ") || l.starts_with("DEFAULT"))
        );
    }

    #[test]
    fn the_cold_jail_uses_every_group_and_the_zygote_all_but_namespaces_and_mounts() {
        let uses = |jail| -> Vec<String> {
            policy(RULE_GROUPS, jail)
                .lines()
                .filter(|l| l.starts_with("USE "))
                .map(|l| l.trim_end_matches(',').to_string())
                .collect()
        };
        assert_eq!(
            uses(Jail::Cold),
            [
                "USE pyexec_kill",
                "USE pyexec_no_new_namespaces",
                "USE pyexec_no_mounts",
                "USE pyexec_no_kernel_interfaces",
                "USE pyexec_no_sockets"
            ]
        );
        assert_eq!(
            uses(Jail::Zygote),
            [
                "USE pyexec_kill",
                "USE pyexec_no_kernel_interfaces",
                "USE pyexec_no_sockets"
            ]
        );
        for jail in [Jail::Cold, Jail::Zygote] {
            let text = policy(RULE_GROUPS, jail);
            assert!(text.trim_end().ends_with("DEFAULT ALLOW"));
            assert!(text.contains("POLICY pyexec_no_new_namespaces {"));
        }
    }

    /// What the zygote runs without, each runner forbids itself again.
    #[test]
    fn every_runner_re_imposes_each_call_the_zygote_may_make() {
        let zygote = include_str!("../../nsjail/zygote.py");
        let start = zygote.find("FORBIDDEN_AFTER_SETUP = {").unwrap();
        let runner_list = &zygote[start..start + zygote[start..].find('}').unwrap()];
        for group in RuleGroup::ALL.iter().filter(|g| !g.binds(Jail::Zygote)) {
            for call in named_calls(group_body(group.policy_name())) {
                // clone is filtered by its namespace flags and clone3 refused
                // with ENOSYS, each by its own instructions in the runner.
                let covered = runner_list.contains(&format!("\"{call}\""))
                    || (call == "clone" && zygote.contains("SYS_CLONE ="))
                    || (call == "clone3" && zygote.contains("SYS_CLONE3 ="));
                assert!(covered, "the runner does not forbid {call} again");
            }
        }
    }
}
