//! `quarantine config check` and `config show`, the completion scripts and the man pages, through the real
//! binary. Every run clears `QUARANTINE_STORE` and `QUARANTINE_CONFIG` unless a test sets them, and names its
//! config file with `--config` (or the environment), so /etc/quarantine/config.toml on the machine never matters.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::BIN;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A store made by `quarantine init`.
    fn store(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        let out = run(&["--store", p.to_str().unwrap(), "init"], &[]);
        assert!(out.status.success(), "init: {}", text(&out.stderr));
        p
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

fn cmd(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = crate::quarantine();
    c.args(args).env_remove("QUARANTINE_STORE").env_remove("QUARANTINE_CONFIG").stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    cmd(args, env).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `config check FILE` with the store from `--store` (so only the file's own values are judged).
fn check(file: &Path, store: &Path) -> Output {
    run(&["--store", s(store), "config", "check", s(file)], &[])
}

/// Runs `config check` expecting exit 1 and an error that names `key` and `line N`; returns stderr.
#[track_caller]
fn assert_problem(out: &Output, key: &str, line: usize) -> String {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {err}");
    let want = format!("line {line}: {key}: ");
    assert!(err.contains(&want), "stderr should contain {want:?}:\n{err}");
    err
}

// ---------------------------------------------------------------------------------------------------------------
// config check

#[test]
fn check_accepts_a_file_setting_every_key() {
    let e = Env::new();
    let store = e.store("q");
    let file = e.file(
        "config.toml",
        &format!(
            "store = \"{}\"\nrelay = \"smtp://127.0.0.1:10025\"\nrelay_tls = false\nsendmail = \"/bin/cat\"\n\
             trace_header = false\nhold_deadline = \"45s\"\norphan_grace = \"2d\"\nmin_free_space = \"1M\"\n\
             [retention]\ndefault = \"30d\"\n[retention.verdict]\nSPAM = \"14d\"\n\"PMX:VIRUS\" = \"90d\"\n",
            s(&store)
        ),
    );
    let out = run(&["config", "check", s(&file)], &[]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("{}: ok", s(&file))), "{stdout}");
    assert!(stdout.contains(&format!("store {} (file {}:1)", s(&store), s(&file))), "{stdout}");
    // The same file is what every other command then uses.
    let out = run(&["--config", s(&file), "verify"], &[]);
    assert!(out.status.success(), "verify with the file: {}", text(&out.stderr));
}

#[test]
fn check_accepts_the_shipped_example_and_no_file_at_all() {
    let e = Env::new();
    let store = e.store("q");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/config.toml");
    let out = check(&example, &store);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let out = run(&["config", "check", "--file-only", s(&example)], &[]);
    assert!(out.status.success(), "--file-only: {}", text(&out.stderr));
    // An empty file is a valid one: every setting is its default.
    let empty = e.file("empty.toml", "");
    assert!(check(&empty, &store).status.success());
}

#[test]
fn check_names_an_unknown_key_and_its_line() {
    let e = Env::new();
    let store = e.store("q");
    let file = e.file("c.toml", "# quarantine\nrelay = \"smtp://127.0.0.1:10025\"\nstroe = \"/srv/q\"\n");
    let err = assert_problem(&check(&file, &store), "stroe", 3);
    assert!(err.contains("unknown key") && err.contains("did you mean `store`"), "{err}");
    assert!(err.contains(s(&file)), "the file is named: {err}");

    let file = e.file("c2.toml", "[retention]\ndefault = \"30d\"\nverdicts = {}\n");
    assert_problem(&check(&file, &store), "retention.verdicts", 3);
    let file = e.file("c3.toml", "store = \"/srv/q\"\n\n[retension]\ndefault = \"30d\"\n");
    assert_problem(&check(&file, &store), "retension", 3);
}

#[test]
fn check_names_a_value_of_the_wrong_type() {
    let e = Env::new();
    let store = e.store("q");
    let cases: &[(&str, &str, usize, &str)] = &[
        ("relay = \"smtp://x\"\ntrace_header = \"yes\"\n", "trace_header", 2, "boolean"),
        ("hold_deadline = 60\n", "hold_deadline", 1, "string"),
        ("\n\nrelay_tls = 1\n", "relay_tls", 3, "boolean"),
        ("store = [\"/a\", \"/b\"]\n", "store", 1, "invalid type"),
        ("[retention]\nverdict = \"SPAM\"\n", "retention.verdict", 2, "invalid type"),
        ("[retention.verdict]\nSPAM = 14\n", "retention.verdict.SPAM", 2, "string"),
    ];
    for (i, (body, key, line, what)) in cases.iter().enumerate() {
        let file = e.file(&format!("t{i}.toml"), body);
        let err = assert_problem(&check(&file, &store), key, *line);
        assert!(err.contains(what), "{body:?}: {err}");
    }
}

#[test]
fn check_names_bad_durations_sizes_and_relays_all_at_once() {
    let e = Env::new();
    let store = e.store("q");
    let file = e.file(
        "c.toml",
        "hold_deadline = \"soon\"\norphan_grace = \"24\"\nmin_free_space = \"lots\"\nrelay = \"ftp://x\"\n\
         [retention]\ndefault = \"1 month\"\n[retention.verdict]\n\"PMX:VIRUS\" = \"90days\"\n",
    );
    let out = check(&file, &store);
    assert_problem(&out, "hold_deadline", 1);
    assert_problem(&out, "orphan_grace", 2);
    assert_problem(&out, "min_free_space", 3);
    assert_problem(&out, "relay", 4);
    assert_problem(&out, "retention.default", 6);
    let err = assert_problem(&out, "retention.verdict.\"PMX:VIRUS\"", 8);
    assert!(err.contains("invalid duration \"soon\"") && err.contains("invalid size \"lots\""), "{err}");
    assert!(err.contains("6 problems found"), "{err}");

    let file = e.file("tls.toml", "relay = \"smtps://relay.example.org\"\nrelay_tls = true\n");
    assert_problem(&check(&file, &store), "relay_tls", 2);
    let file = e.file("zero.toml", "hold_deadline = \"0s\"\n");
    assert_problem(&check(&file, &store), "hold_deadline", 1);
    let file = e.file("glob.toml", "[retention.verdict]\n\"PMX:*\" = \"90d\"\n");
    assert_problem(&check(&file, &store), "retention.verdict.\"PMX:*\"", 2);
}

#[test]
fn check_reports_a_toml_syntax_error_with_its_line() {
    let e = Env::new();
    let store = e.store("q");
    let file = e.file("c.toml", "store = \"/srv/q\"\nrelay = smtp://127.0.0.1:10025\n");
    let out = check(&file, &store);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("line 2: "), "{}", text(&out.stderr));
    let file = e.file("dup.toml", "store = \"/a\"\n\nstore = \"/b\"\n");
    let out = check(&file, &store);
    assert!(text(&out.stderr).contains("line 3: "), "{}", text(&out.stderr));
}

/// A shared index that no server answers for: the key, its line and where it is, said once
/// (`line 1: index: host=...: error connecting ...`, not `index: index host=...`).
#[test]
fn check_names_an_unreachable_shared_index_once() {
    let e = Env::new();
    let store = e.store("q");
    let gone = e.path("no-server-here");
    let file = e.file("shared.toml", &format!("index = \"host={} user=postgres dbname=q\"\n", s(&gone)));
    let err = assert_problem(&check(&file, &store), "index", 1);
    assert!(err.contains(&format!("line 1: index: host={} user=postgres dbname=q: ", s(&gone))), "{err}");
    assert!(!err.contains("index: index"), "the word doubled: {err}");
    assert!(err.contains("is the PostgreSQL server running and reachable?"), "{err}");
}

#[test]
fn check_refuses_a_store_it_cannot_reach() {
    let e = Env::new();
    // Missing, named by the file: the key and the line of `store`.
    let file = e.file("missing.toml", "relay = \"smtp://127.0.0.1:25\"\nstore = \"/nonexistent/quarantine-store\"\n");
    let err = assert_problem(&run(&["config", "check", s(&file)], &[]), "store", 2);
    assert!(err.contains("/nonexistent/quarantine-store does not exist"), "{err}");
    // A file where the directory should be.
    let plain = e.file("plain", "x");
    let file = e.file("plain.toml", &format!("store = \"{}\"\n", s(&plain)));
    let err = assert_problem(&run(&["config", "check", s(&file)], &[]), "store", 1);
    assert!(err.contains("not a directory"), "{err}");
    // A directory that is not a store.
    std::fs::create_dir(e.path("empty")).unwrap();
    let file = e.file("empty.toml", &format!("store = \"{}\"\n", s(&e.path("empty"))));
    let err = assert_problem(&run(&["config", "check", s(&file)], &[]), "store", 1);
    assert!(err.contains("not a quarantine store"), "{err}");
    // Named by the flag or the environment instead: they are named.
    let ok = e.file("ok.toml", "");
    let out = run(&["--store", "/nonexistent/q2", "config", "check", s(&ok)], &[]);
    assert!(text(&out.stderr).contains("--store: /nonexistent/q2 does not exist"), "{}", text(&out.stderr));
    let out = run(&["config", "check", s(&ok)], &[("QUARANTINE_STORE", "/nonexistent/q3")]);
    assert!(text(&out.stderr).contains("$QUARANTINE_STORE: /nonexistent/q3"), "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(1));
    // --file-only judges the file alone.
    assert!(run(&["config", "check", "--file-only", s(&e.path("missing.toml"))], &[]).status.success());
}

#[test]
fn check_refuses_a_store_this_user_cannot_open() {
    // Only root can switch to another user here; as another user the 0700 store is unreachable by construction.
    quarantine_testkit::env::require_root("to switch to another user");
    let e = Env::new();
    let store = e.store("q");
    std::fs::set_permissions(e.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let file = e.file("c.toml", &format!("store = \"{}\"\n", s(&store)));
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = crate::program(quarantine_testkit::require("runuser", "util-linux"))
        .args(["-u", "nobody", "--", BIN, "config", "check", s(&file)])
        .env_remove("QUARANTINE_STORE")
        .output()
        .unwrap();
    let err = assert_problem(&out, "store", 1);
    assert!(err.contains("unreachable") && err.contains("ermission denied"), "{err}");
}

#[test]
fn check_without_a_file_argument_uses_the_flag_then_the_environment() {
    let e = Env::new();
    let store = e.store("q");
    let good = e.file("good.toml", &format!("store = \"{}\"\n", s(&store)));
    let bad = e.file("bad.toml", "\nstroe = \"x\"\n");
    assert!(run(&["--config", s(&good), "config", "check"], &[]).status.success());
    assert_problem(&run(&["--config", s(&bad), "config", "check"], &[]), "stroe", 2);
    assert!(run(&["config", "check"], &[("QUARANTINE_CONFIG", s(&good))]).status.success());
    assert_problem(&run(&["config", "check"], &[("QUARANTINE_CONFIG", s(&bad))]), "stroe", 2);
    // The flag wins over the environment.
    assert!(run(&["--config", s(&good), "config", "check"], &[("QUARANTINE_CONFIG", s(&bad))]).status.success());
    // A file that is not there: exit 1, named.
    let out = run(&["config", "check", "/nonexistent/quarantine.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/quarantine.toml"), "{}", text(&out.stderr));
}

#[test]
fn other_commands_refuse_a_bad_file_naming_the_key_and_line() {
    let e = Env::new();
    let store = e.store("q");
    let bad = e.file("bad.toml", "store = \"/srv/q\"\norphan_grace = \"a day\"\n");
    let out = run(&["--store", s(&store), "--config", s(&bad), "verify"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("line 2: orphan_grace: invalid duration"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// config show

fn show_json(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["config", "show", "--json"]);
    let out = run(&all, env);
    assert!(out.status.success(), "config show: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[track_caller]
fn assert_setting(v: &serde_json::Value, key: &str, value: Option<&str>, source: &str, origin: Option<&str>) {
    let got = &v[key];
    assert_eq!(got["value"].as_str(), value, "{key}: {got}");
    assert_eq!(got["source"].as_str(), Some(source), "{key}: {got}");
    assert_eq!(got["origin"].as_str(), origin, "{key}: {got}");
}

#[test]
fn show_says_where_each_setting_came_from() {
    let e = Env::new();
    let file = e.file(
        "c.toml",
        "# comment\nstore = \"/srv/from-file\"\nhold_deadline = \"30s\"\n\n[retention.verdict]\n\"PMX:VIRUS\" = \"90d\"\n",
    );
    let f = s(&file);
    let at = |line: usize| format!("{f}:{line}");

    // File values, with their lines; everything else its default.
    let v = show_json(&["--config", f], &[]);
    assert_setting(&v, "config", Some(f), "flag", Some("--config"));
    assert_setting(&v, "store", Some("/srv/from-file"), "file", Some(&at(2)));
    assert_setting(&v, "hold_deadline", Some("30s"), "file", Some(&at(3)));
    assert_setting(&v, "retention.verdict.\"PMX:VIRUS\"", Some("90d"), "file", Some(&at(6)));
    assert_setting(&v, "orphan_grace", Some("24h"), "default", None);
    assert_setting(&v, "trace_header", Some("true"), "default", None);
    assert_setting(&v, "relay", None, "default", None);

    // The environment wins over the file, the flag over the environment.
    let env = [("QUARANTINE_STORE", "/srv/from-env")];
    let v = show_json(&["--config", f], &env);
    assert_setting(&v, "store", Some("/srv/from-env"), "environment", Some("QUARANTINE_STORE"));
    let v = show_json(&["--config", f, "--store", "/srv/from-flag"], &env);
    assert_setting(&v, "store", Some("/srv/from-flag"), "flag", Some("--store"));

    // The config file itself: from the environment.
    let v = show_json(&[], &[("QUARANTINE_CONFIG", f)]);
    assert_setting(&v, "config", Some(f), "environment", Some("QUARANTINE_CONFIG"));
    assert_setting(&v, "hold_deadline", Some("30s"), "file", Some(&at(3)));

    // A file without `store`: the default store.
    let nostore = e.file("n.toml", "relay = \"smtp://127.0.0.1:10025\"\n");
    let v = show_json(&["--config", s(&nostore)], &[]);
    assert_setting(&v, "store", Some("/var/lib/quarantine"), "default", None);
    assert_setting(&v, "relay", Some("smtp://127.0.0.1:10025"), "file", Some(&format!("{}:1", s(&nostore))));
}

#[test]
fn show_prints_a_table_and_refuses_a_bad_file() {
    let e = Env::new();
    let file = e.file("c.toml", "relay = \"smtp://127.0.0.1:10025\"\n");
    let out = run(&["--config", s(&file), "--store", "/srv/q", "config", "show"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let line = |key: &str| table.lines().find(|l| l.starts_with(&format!("{key} "))).unwrap_or("").to_string();
    assert!(table.starts_with("KEY "), "{table}");
    assert!(line("store").contains("/srv/q") && line("store").ends_with("flag --store"), "{table}");
    assert!(line("relay").ends_with(&format!("file {}:1", s(&file))), "{table}");
    assert!(line("hold_deadline").contains("60s") && line("hold_deadline").ends_with("default"), "{table}");

    let bad = e.file("bad.toml", "relay = \"smtp://127.0.0.1:10025\"\nrealy = \"x\"\n");
    let out = run(&["--config", s(&bad), "config", "show"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("line 2: realy: unknown key"), "{}", text(&out.stderr));
}

// ---------------------------------------------------------------------------------------------------------------
// completions and man pages

fn completion(shell: &str) -> String {
    let out = run(&["completions", shell], &[]);
    assert!(out.status.success(), "completions {shell}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn bash_completion_loads_and_completes() {
    let e = Env::new();
    let bash = completion("bash");
    assert!(!bash.contains("manpages"), "offers the hidden packaging helper");
    let script = e.file("quarantine.bash", &bash);
    let syntax = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(syntax.status.success(), "bash -n: {}", text(&syntax.stderr));
    // Sourced in a fresh bash: no error output, the completion is registered, and it completes subcommands,
    // nested ones and flags.
    let probe = format!(
        "source {} || exit 9\ncomplete -p quarantine\n\
         COMP_WORDS=(quarantine rel); COMP_CWORD=1; _quarantine quarantine rel quarantine; echo \"1:${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(quarantine config ch); COMP_CWORD=2; _quarantine quarantine ch config; echo \"2:${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(quarantine release --dry); COMP_CWORD=2; _quarantine quarantine --dry release; echo \"3:${{COMPREPLY[*]}}\"\n",
        s(&script)
    );
    let out = Command::new("bash").arg("--norc").arg("-c").arg(&probe).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && stderr.is_empty(), "status {}; stderr: {stderr}", out.status);
    assert!(stdout.contains("-F _quarantine quarantine"), "{stdout}");
    assert!(stdout.contains("1:release"), "{stdout}");
    assert!(stdout.contains("2:check"), "{stdout}");
    assert!(stdout.contains("3:--dry-run"), "{stdout}");
}

#[test]
fn zsh_and_fish_completions_are_generated() {
    let zsh = completion("zsh");
    assert!(zsh.starts_with("#compdef quarantine"), "{}", &zsh[..zsh.len().min(200)]);
    let fish = completion("fish");
    assert!(fish.contains("complete -c quarantine"), "{}", &fish[..fish.len().min(200)]);
    for (shell, script, check) in [("zsh", &zsh, "-n"), ("fish", &fish, "--no-execute")] {
        assert!(script.contains("release") && script.contains("--dry-run"), "{shell}");
        assert!(!script.contains("manpages"), "{shell}: offers the hidden packaging helper");
        // Syntax-check with the shell itself where it is installed.
        let e = Env::new();
        let f = e.file("script", script);
        if let Ok(out) = Command::new(shell).arg(check).arg(&f).output() {
            assert!(out.status.success(), "{shell} {check}: {}", text(&out.stderr));
        }
    }
    let out = run(&["completions", "tcsh"], &[]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn completions_and_config_need_no_valid_config_file() {
    let e = Env::new();
    let bad = e.file("bad.toml", "stroe = 1\n");
    let out = run(&["--config", s(&bad), "completions", "bash"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn man_pages_cover_every_subcommand_with_examples() {
    let e = Env::new();
    let dir = e.path("man");
    let out = run(&["manpages", s(&dir)], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&run(&["--help"], &[]).stdout);
    // Every subcommand `--help` lists has a page; the hidden generator has none.
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   ")) // a wrapped description
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.contains(&"config") && commands.contains(&"release"), "{help}");
    for c in &commands {
        assert!(dir.join(format!("quarantine-{c}.1")).is_file(), "no page for {c}");
    }
    assert!(!dir.join("quarantine-manpages.1").exists());
    for page in ["quarantine-config-check.1", "quarantine-config-show.1"] {
        assert!(dir.join(page).is_file(), "{page}");
    }
    let top = std::fs::read_to_string(dir.join("quarantine.1")).unwrap();
    for want in [".SH EXAMPLES", ".SH FILES", ".SH ENVIRONMENT", ".SH EXIT STATUS", "release \\-\\-verdict PMX:VIRUS"] {
        assert!(top.contains(want), "quarantine.1 lacks {want:?}");
    }
    assert!(top.contains("search \\-\\-rcpt alice@example.edu"), "helpdesk example");
    assert!(top.contains("purge \\-\\-yes"), "cron example");
    // man renders it without warnings, where man is installed.
    if let Ok(out) =
        Command::new("man").args(["--warnings", "-l"]).arg(dir.join("quarantine.1")).env("MANWIDTH", "100").output()
    {
        if out.status.success() {
            let page = text(&out.stdout);
            assert!(page.contains("EXAMPLES") && page.contains("quarantine freeze"), "{page}");
            assert!(text(&out.stderr).trim().is_empty(), "man warnings: {}", text(&out.stderr));
        }
    }
}

/// Issue 13 item 21: durations are bounded where they are parsed (once), so an absurd value is a one-line usage
/// error naming it — 75 for hold, 2 elsewhere — never an internal error from a clock or a lock timeout.
#[test]
fn durations_out_of_range_are_refused_with_their_value() {
    let st = crate::store();
    let msg = b"Subject: x\n\nx\n";
    for deadline in ["1000000000w", "0s", "2d"] {
        let out = st.run(
            &["hold", "--deadline", deadline, "--verdict", "SPAM", "--from", "a@example.org", "--", "b@example.org"],
            quarantine_testkit::Input::Bytes(msg),
        );
        out.code_is(75, &format!("hold --deadline {deadline}"));
        assert!(out.stderr.contains(deadline) && !out.stderr.contains("internal error"), "{}", out.brief());
        assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {}", out.brief());
    }
    let out = st.run(&["purge", "--older-than", "1000000000w", "--dry-run"], quarantine_testkit::Input::Null);
    out.code_is(2, "purge --older-than 1000000000w");
    assert!(out.stderr.contains("longer than 100 years"), "{}", out.brief());
    let e = Env::new();
    let file = e.file("c.toml", "hold_deadline = \"3d\"\n");
    let out = check(&file, st.root.as_path());
    assert_problem(&out, "hold_deadline", 1);
}

/// Issue 13 item 21: an orphan grace below the safe floor is said out loud, not accepted silently.
#[test]
fn an_orphan_grace_below_an_hour_is_warned_about() {
    let st = crate::store();
    st.hold_ok(b"Subject: keep\n\nk\n", &["--verdict", "KEEP", "--from", "a@example.org", "--", "b@example.org"]);
    let out =
        st.run(&["purge", "--verdict", "NONE-SUCH", "--yes", "--orphan-grace", "0s"], quarantine_testkit::Input::Null);
    out.code_is(0, "purge with --orphan-grace 0s");
    assert!(out.stderr.contains("warning: an orphan grace of 0s is below 1h"), "{}", out.brief());
    let out =
        st.run(&["purge", "--verdict", "NONE-SUCH", "--yes", "--orphan-grace", "2h"], quarantine_testkit::Input::Null);
    out.code_is(0, "purge with --orphan-grace 2h");
    assert!(!out.stderr.contains("warning"), "{}", out.brief());
}
