//! The one test harness of the quarantine workspace (dev-only, `publish = false`).
//!
//! It does not depend on `quarantine-store` (so the store's own tests can use it without a dependency cycle) and
//! does not locate the binary itself: the crate that owns `quarantine` passes `env!("CARGO_BIN_EXE_quarantine")`.
//!
//! - [`run`]: a process runner with a time limit ([`run::run`], [`run::Out`]) that kills a hung child and fails
//!   the test naming the command, and exit-code asserts that print stderr.
//! - [`env`]: the hermetic environment ([`env::Scratch`]): `env_clear()`, a fixed PATH, HOME/TMPDIR in the
//!   scratch dir, an empty scratch config file; and [`env::require`], which fails (never skips) a test whose peer
//!   program is missing, naming the Debian package.
//! - [`store`]: a scratch store made by `quarantine init` ([`store::Store`]).
//! - [`gen`]: a deterministic PRNG ([`gen::XorShift`]), message generators, file-tree helpers.
//! - [`strace`]: strace command lines, trace parsing and the fault sweep ([`strace::sweep`]).
//! - [`smtp`]: one scriptable SMTP/LMTP server ([`smtp::Server`]; plain, implicit TLS or STARTTLS with a
//!   [`smtp::TestCert`] from a throw-away CA) recording every transaction, and a client.
//! - [`sink`]: Postfix's smtp-sink recording each message to a file.
//! - [`postfix`]: a private Postfix instance.
//! - [`rspamd`]: a private rspamd (its metadata_exporter posting to `serve`) and `rspamc`.
//! - [`doc`]: fenced snippets read out of `docs/`, for tests that run what a doc shows.
//! - [`s3`]: a real SeaweedFS server (`weed server -s3`) with a bucket per test.
//!
//! Nothing here skips: a missing peer, a hang or a failed set-up panics with a message that says what to do.

pub mod doc;
pub mod env;
pub mod gen;
pub mod postfix;
pub mod postgres;
pub mod rspamd;
pub mod run;
pub mod s3;
pub mod sink;
pub mod smtp;
pub mod store;
pub mod strace;

pub use env::{require, Scratch};
pub use gen::XorShift;
pub use run::{code_of, Input, Out, HANG, KILLED};
pub use store::Store;
