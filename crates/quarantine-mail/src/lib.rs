//! `quarantine-mail`: the mail formats the quarantine reads and writes, with no store and no durability policy.
//!
//! - [`address`]: envelope addresses as an MTA hands them over (normalised, refused when they could smuggle an
//!   SMTP command), and the case-folded form they are compared in.
//! - [`headers`]: best-effort extraction of the index fields (From, To, Cc, Subject, Message-ID, Date, attachment
//!   names); never panics, never fails a hold.
//! - [`source`]: the import readers — Maildir, mbox (mboxrd and mboxo), eml files, amavisd-new quarantine files —
//!   as a list of [`source::Unit`]s opened one at a time, and [`source::envelope`], which recovers an envelope from
//!   what a file says.
//! - [`mboxrd`]: the mboxrd writer of `export --format mbox`.
//! - [`encode`]: the SMTP DATA encoder (every line ending CRLF, dots stuffed) that keeps a body from ending DATA
//!   early or smuggling a second message.
//!
//! Everything here is a pure function of its input bytes (the readers open the files they are given, nothing
//! else), so it can be fuzzed and tested without a store.

pub mod address;
pub mod encode;
pub mod headers;
pub mod mboxrd;
pub mod source;

pub use address::BadAddress;
pub use headers::HeaderFields;
