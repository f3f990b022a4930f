//! The bench's options, parsed by hand (to be replaced by clap).

use anyhow::{bail, Context, Result};

/// Parsed arguments of one command: positionals, flags with values, and switches.
pub struct Args {
    positional: Vec<String>,
    values: Vec<(String, String)>,
    switches: Vec<String>,
}

impl Args {
    /// Splits `args` given the flags that take a value and the switches the command knows;
    /// `--bootstrap` and `--json` are known to all.
    pub fn parse(args: &[String], value_flags: &[&str], switches: &[&str]) -> Result<Args> {
        let mut parsed = Args {
            positional: Vec::new(),
            values: Vec::new(),
            switches: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if !arg.starts_with("--") {
                parsed.positional.push(arg.clone());
            } else if arg == "--bootstrap" || value_flags.contains(&arg.as_str()) {
                let value = it.next().with_context(|| format!("{arg} needs a value"))?;
                parsed.values.push((arg.clone(), value.clone()));
            } else if arg == "--json" || switches.contains(&arg.as_str()) {
                parsed.switches.push(arg.clone());
            } else {
                bail!("unknown argument {arg:?}");
            }
        }
        Ok(parsed)
    }

    pub fn positional(&self) -> &[String] {
        &self.positional
    }

    /// The last value of `flag`.
    pub fn value(&self, flag: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable `flag`, in order.
    pub fn values(&self, flag: &str) -> Vec<&str> {
        self.values
            .iter()
            .filter(|(f, _)| f == flag)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `flag`'s value parsed as a number.
    pub fn number<T: std::str::FromStr>(&self, flag: &str) -> Result<Option<T>> {
        self.value(flag)
            .map(|v| {
                v.parse()
                    .map_err(|_| anyhow::anyhow!("{flag} must be a number, got {v:?}"))
            })
            .transpose()
    }

    pub fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    pub fn json(&self) -> bool {
        self.switch("--json")
    }
}

/// Splits `KEY=VALUE`.
pub fn key_value(s: &str) -> Result<(&str, &str)> {
    s.split_once('=')
        .with_context(|| format!("expected KEY=VALUE, got {s:?}"))
}
