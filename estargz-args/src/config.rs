//! A command's flags from a TOML file (`--config FILE`): one key per flag,
//! named in the vocabulary's snake_case; a flag on the command line wins
//! over the file; an unknown key, or a value of the wrong type, is an error
//! naming the key and the file.
//!
//! The file is turned into command-line words (`--flag=value`) for the
//! flags the command line did not set, and the command line is parsed again
//! with them: every value goes through the flag's own parser and checks, so
//! the file and the flags cannot disagree on what a setting means.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use estargz_core::Error;

/// One key of a config file and the flag it sets.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key in the file.
    pub name: &'static str,
    /// The clap id of the flag (its field name).
    pub arg: &'static str,
    /// `true` in the file means the flag is absent: `prefetch = false` is
    /// `--no-prefetch`.
    pub negated: bool,
}

impl Key {
    /// `name` sets the flag `arg` (a switch: `true` gives the flag).
    pub const fn new(name: &'static str, arg: &'static str) -> Key {
        Key {
            name,
            arg,
            negated: false,
        }
    }

    /// `name = false` gives the switch `arg` (a `--no-…` flag).
    pub const fn negated(name: &'static str, arg: &'static str) -> Key {
        Key {
            name,
            arg,
            negated: true,
        }
    }
}

/// A parsed config file (`Default`: an empty one).
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
}

fn invalid(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("config file {}: {msg}", path.display()))
}

impl ConfigFile {
    /// Reads and parses `path`. A missing file is `None` when it is only
    /// the default path (`explicit` false), an error otherwise.
    pub fn load(path: &Path, explicit: bool) -> Result<Option<ConfigFile>, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
            Err(e) => return Err(invalid(path, e)),
        };
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| invalid(path, e.to_string().trim_end()))?;
        Ok(Some(ConfigFile {
            path: path.to_path_buf(),
            table,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys whose values differ between `self` and `other` (set in one
    /// and not the other included), in `keys` order.
    pub fn changed(&self, other: &ConfigFile, keys: &[Key]) -> Vec<&'static str> {
        keys.iter()
            .filter(|k| self.table.get(k.name) != other.table.get(k.name))
            .map(|k| k.name)
            .collect()
    }

    /// The command-line words for every key of the file whose flag was not
    /// given on the command line (`matches`, from parsing `cmd`), each
    /// checked as `cmd` would check the flag. Unknown keys and values of
    /// the wrong type are errors naming the key.
    fn words(
        &self,
        cmd: &Command,
        matches: &ArgMatches,
        keys: &[Key],
    ) -> Result<Vec<(&'static str, Vec<OsString>)>, Error> {
        if let Some(unknown) = self
            .table
            .keys()
            .find(|name| !keys.iter().any(|k| k.name == name.as_str()))
        {
            return Err(invalid(&self.path, format!("unknown key `{unknown}`")));
        }
        let mut out = Vec::new();
        for key in keys {
            let Some(value) = self.table.get(key.name) else {
                continue;
            };
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == key.arg)
                .unwrap_or_else(|| panic!("config key {} names no flag {}", key.name, key.arg));
            let long = arg
                .get_long()
                .unwrap_or_else(|| panic!("config key {}: {} has no long flag", key.name, key.arg));
            let bad = |want: &str| {
                invalid(
                    &self.path,
                    format!(
                        "key `{}`: expected {want}, not a {}",
                        key.name,
                        value.type_str()
                    ),
                )
            };
            let words = match arg.get_action() {
                ArgAction::SetTrue => {
                    let on = value.as_bool().ok_or_else(|| bad("true or false"))?;
                    match on != key.negated {
                        true => vec![OsString::from(format!("--{long}"))],
                        false => Vec::new(),
                    }
                }
                ArgAction::Append => value
                    .as_array()
                    .ok_or_else(|| bad("an array"))?
                    .iter()
                    .map(|v| scalar(v).map(|s| format!("--{long}={s}").into()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("an array of strings or numbers"))?,
                _ => {
                    let s = scalar(value).ok_or_else(|| bad("a string or a number"))?;
                    vec![format!("--{long}={s}").into()]
                }
            };
            if matches.value_source(key.arg) == Some(ValueSource::CommandLine) {
                continue;
            }
            out.push((key.name, words));
        }
        Ok(out)
    }
}

/// A string or an integer as a flag's value.
fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Where a command's config file is and which keys it takes.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSpec<'a> {
    /// The subcommand the file configures (`None`: the command itself).
    pub subcommand: Option<&'a str>,
    /// The clap id of the `--config` flag.
    pub config_arg: &'a str,
    /// Read when `--config` is not given; its absence means no file.
    pub default_path: &'a str,
    pub keys: &'a [Key],
}

/// `argv` with the config file's settings added for the flags it does not
/// give, and the file read (`None` without one). `top` is what `cmd` made
/// of `argv` (clap's own errors, `--help` included, are the caller's to
/// report first). Parse the result with the same command.
pub fn merge(
    cmd: &Command,
    argv: &[OsString],
    top: &ArgMatches,
    spec: &ConfigSpec,
) -> Result<(Vec<OsString>, Option<ConfigFile>), Error> {
    let (sub_cmd, matches, insert_at) = match spec.subcommand {
        None => (cmd, top, 1),
        Some(name) => match top.subcommand_matches(name) {
            None => return Ok((argv.to_vec(), None)),
            Some(m) => {
                let sub = cmd.find_subcommand(name).expect("the subcommand exists");
                // The command has no options of its own before the
                // subcommand's name, so its first occurrence is the name.
                let at = argv
                    .iter()
                    .skip(1)
                    .position(|a| a == OsStr::new(name))
                    .map_or(argv.len(), |i| i + 2);
                (sub, m, at)
            }
        },
    };
    let (path, explicit) = match matches.get_one::<PathBuf>(spec.config_arg) {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(spec.default_path), false),
    };
    let Some(file) = ConfigFile::load(&path, explicit)? else {
        return Ok((argv.to_vec(), None));
    };
    let with = |extra: &[OsString]| {
        let mut v = argv[..insert_at].to_vec();
        v.extend_from_slice(extra);
        v.extend_from_slice(&argv[insert_at..]);
        v
    };
    let mut all = Vec::new();
    for (key, words) in file.words(sub_cmd, matches, spec.keys)? {
        // Each key alone, so a bad value is reported under its key.
        if let Err(e) = cmd.clone().try_get_matches_from(with(&words)) {
            return Err(invalid(
                file.path(),
                format!("key `{key}`: {}", clap_message(&e)),
            ));
        }
        all.extend(words);
    }
    Ok((with(&all), Some(file)))
}

/// clap's message without its `error: ` prefix and usage footer.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Parser, Subcommand};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand, Debug)]
    enum Cmd {
        Serve(ServeArgs),
        Other,
    }

    #[derive(Args, Debug)]
    struct ServeArgs {
        dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        plain_http: bool,
        #[arg(long)]
        no_prefetch: bool,
        #[arg(long, default_value_t = 30)]
        request_timeout: u64,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        insecure_registry: Vec<String>,
    }

    const KEYS: &[Key] = &[
        Key::new("plain_http", "plain_http"),
        Key::negated("prefetch", "no_prefetch"),
        Key::new("request_timeout_sec", "request_timeout"),
        Key::new("name", "name"),
        Key::new("insecure_registries", "insecure_registry"),
    ];

    fn run(file: &str, args: &[&str]) -> Result<ServeArgs, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = ["prog", "serve", "/d", "--config"]
            .iter()
            .map(OsString::from)
            .collect();
        argv.push(path.clone().into());
        argv.extend(args.iter().map(OsString::from));
        let spec = ConfigSpec {
            subcommand: Some("serve"),
            config_arg: "config",
            default_path: "/nonexistent/default.toml",
            keys: KEYS,
        };
        let (merged, read) = merge_argv(&argv, &spec).map_err(|e| e.to_string())?;
        assert_eq!(read.unwrap().path(), path);
        match Cli::try_parse_from(merged).unwrap().cmd {
            Cmd::Serve(a) => Ok(a),
            Cmd::Other => unreachable!(),
        }
    }

    use clap::CommandFactory;

    fn merge_argv(
        argv: &[OsString],
        spec: &ConfigSpec,
    ) -> Result<(Vec<OsString>, Option<ConfigFile>), Error> {
        let top = Cli::command().get_matches_from(argv);
        merge(&Cli::command(), argv, &top, spec)
    }

    #[test]
    fn every_key_is_read() {
        let a = run(
            "plain_http = true\nprefetch = false\nrequest_timeout_sec = 7\n\
             name = \"x y\"\ninsecure_registries = [\"a:1\", \"b\"]\n",
            &[],
        )
        .unwrap();
        assert!(a.plain_http && a.no_prefetch);
        assert_eq!(a.request_timeout, 7);
        assert_eq!(a.name.as_deref(), Some("x y"));
        assert_eq!(a.insecure_registry, ["a:1", "b"]);
        assert_eq!(a.dir, PathBuf::from("/d"));
        // The opposite values leave the flags unset.
        let a = run("plain_http = false\nprefetch = true\n", &[]).unwrap();
        assert!(!a.plain_http && !a.no_prefetch);
    }

    #[test]
    fn flags_win_over_the_file() {
        let a = run(
            "request_timeout_sec = 7\ninsecure_registries = [\"a\"]\nname = \"f\"\n",
            &[
                "--request-timeout",
                "9",
                "--insecure-registry",
                "c",
                "--name=cli",
            ],
        )
        .unwrap();
        assert_eq!(a.request_timeout, 9);
        assert_eq!(a.insecure_registry, ["c"]);
        assert_eq!(a.name.as_deref(), Some("cli"));
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let e = run("plain_http = true\nprefetchh = false\n", &[]).unwrap_err();
        assert!(
            e.contains("unknown key `prefetchh`") && e.contains("c.toml"),
            "{e}"
        );
        let e = run("[plain_http]\n", &[]).unwrap_err();
        assert!(
            e.contains("key `plain_http`: expected true or false"),
            "{e}"
        );
        let e = run("request_timeout_sec = \"soon\"\n", &[]).unwrap_err();
        assert!(
            e.contains("key `request_timeout_sec`") && e.contains("invalid value 'soon'"),
            "{e}"
        );
        let e = run("request_timeout_sec = -1\n", &[]).unwrap_err();
        assert!(e.contains("key `request_timeout_sec`"), "{e}");
        let e = run("insecure_registries = \"a\"\n", &[]).unwrap_err();
        assert!(
            e.contains("key `insecure_registries`: expected an array"),
            "{e}"
        );
        let e = run("name = 1.5\n", &[]).unwrap_err();
        assert!(
            e.contains("key `name`: expected a string or a number"),
            "{e}"
        );
        let e = run("plain_http = \n", &[]).unwrap_err();
        assert!(e.contains("c.toml") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_missing_default_file_is_no_file_and_a_missing_named_one_an_error() {
        let spec = ConfigSpec {
            subcommand: Some("serve"),
            config_arg: "config",
            default_path: "/nonexistent/default.toml",
            keys: KEYS,
        };
        let argv: Vec<OsString> = ["prog", "serve", "/d"].iter().map(OsString::from).collect();
        let (merged, file) = merge_argv(&argv, &spec).unwrap();
        assert_eq!(merged, argv);
        assert!(file.is_none());
        let mut named = argv.clone();
        named.extend(["--config".into(), "/nonexistent/named.toml".into()]);
        let e = merge_argv(&named, &spec).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/named.toml"), "{e}");
        // Other subcommands are left alone.
        let other: Vec<OsString> = ["prog", "other"].iter().map(OsString::from).collect();
        assert_eq!(merge_argv(&other, &spec).unwrap().0, other);
    }

    #[test]
    fn changed_keys_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "plain_http = true\nname = \"x\"\n").unwrap();
        std::fs::write(&b, "name = \"y\"\nprefetch = false\n").unwrap();
        let a = ConfigFile::load(&a, true).unwrap().unwrap();
        let b = ConfigFile::load(&b, true).unwrap().unwrap();
        assert_eq!(a.changed(&b, KEYS), ["plain_http", "prefetch", "name"]);
    }
}
