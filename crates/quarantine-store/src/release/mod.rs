//! Release (DESIGN section 6): re-deliver held originals over SMTP or through a sendmail-compatible command,
//! exactly once per recipient.
//!
//! Plan, then execute: [`Store::plan_release`](crate::Store::plan_release) reads the index and decides, per
//! recipient, what a release would do (send, retry an in-doubt send, skip, refuse); `--dry-run` prints that and
//! stops. [`Store::execute_release`](crate::Store::execute_release) carries a plan out and reports per recipient.
//!
//! # The journal (exactly once)
//! Each recipient row is the journal. Before a message is sent, a write transaction claims its recipients
//! (`held` → `releasing`, stamped with this run's release tag), and only rows still `held` are claimed, so two
//! concurrent releases never both deliver. After the relay's final reply: 2xx → `released` with the reply text
//! (it carries the relay's queue id); 4xx → back to `held`, attempt counted; 5xx → `failed` with the reply. A
//! crash between sending and recording leaves `releasing`: the next run shows those recipients *in doubt* and
//! sends them again only with `--retry-in-doubt`. The tag names the claiming process (host, boot, pid, start
//! time, actor), so a later run can tell "in doubt" (that process is gone) from "another release is sending
//! these right now" (it is alive): see [`journal`].
//!
//! # Performance
//! Claims and outcomes are committed in batches (at most [`BATCH`] messages, and at least once a second), not
//! per message: with `synchronous=FULL` each commit is an fsync. The journal runs on its own thread, so its
//! fsyncs overlap the sending: while batch *i* is on the wire, one transaction records what batch *i* − 1 got
//! and claims batch *i* + 1 — one fsync per batch, and the senders never wait for it unless it takes longer than
//! a batch's sending. Each recipient is still claimed by a committed transaction before any sender sees it, and
//! recorded only after its reply. A crash can leave at most three batches in doubt (the one being sent, the one
//! claimed next, the outcomes not yet committed), and every one of them is listed by the next run. Each SMTP
//! connection is reused and reopened if it breaks. With one connection two loader threads (`load.rs`) read,
//! decompress, re-hash and (for SMTP) encode the next originals into reused buffers while the current one is on
//! the wire, so the sending thread only writes and reads. With
//! `--connections N` ([`Store::execute_release_with`](crate::Store::execute_release_with)), N worker threads each
//! own one transport and take the claimed messages of a batch from one queue; the claims and the outcomes stay
//! transactions on the store's one index connection, so the journal, and "each recipient claimed once before it
//! is sent", are unchanged.
//!
//! # Wire format
//! See `quarantine_mail::encode`: every line ending becomes CRLF, dots are stuffed, and the message goes out in one write, so no
//! body can end the DATA early or smuggle a second message. The SMTP client and the sendmail path live in
//! `quarantine-relay`, behind [`Transport`].

mod exec;
pub mod journal;
mod load;
mod plan;
mod rescan;

pub use exec::{ExecOptions, OpenTransport, Problem, ProblemKind, Report};
pub use journal::{describe as describe_tag, Outcome};
pub use plan::{Action, Plan, PlanCounts, PlanRequest, PlannedMessage, PlannedRecipient, Skip};
pub use rescan::{Rescan, ScanVerdict};

/// Messages claimed (and outcomes committed) per write transaction.
pub const BATCH: usize = 100;

/// Where released mail goes: an SMTP relay or a sendmail command (`quarantine-relay`), or a test's own.
///
/// The journal does not care how a message travels; it needs one [`Outcome`] per recipient, in order, and a
/// clear line between "this recipient's answer" and "the transport cannot be used at all".
pub trait Transport {
    /// Sends one message (`parts`: its bytes in pieces, e.g. the trace header and the original, any line
    /// endings) from `from` (empty: the null sender) to `rcpts`; one outcome per recipient, in order. `Err` only
    /// when nothing of this message was sent and the transport cannot be used: the run stops there.
    fn send(&mut self, from: &str, rcpts: &[&str], parts: &[&[u8]]) -> std::result::Result<Vec<Outcome>, Down>;
    /// Whether this transport sends SMTP DATA: then a release encodes each message (into
    /// [`Encoded`](quarantine_mail::encode::Encoded)) on a loader thread, ahead of the sending, and hands it over
    /// with [`Transport::send_encoded`].
    fn wants_smtp_data(&self) -> bool {
        false
    }
    /// [`Transport::send`] with `parts` already encoded as `data` ([`Encoded::encode`] of exactly `parts`): the
    /// same outcomes, the same promise.
    ///
    /// [`Encoded::encode`]: quarantine_mail::encode::Encoded::encode
    fn send_encoded(
        &mut self,
        from: &str,
        rcpts: &[&str],
        parts: &[&[u8]],
        data: &quarantine_mail::encode::Encoded,
    ) -> std::result::Result<Vec<Outcome>, Down> {
        let _ = data;
        self.send(from, rcpts, parts)
    }
    /// Ends the session politely (SMTP QUIT). Called once at the end of a run.
    fn finish(&mut self) {}
    /// How the audit row and the summary name it, e.g. `smtp://127.0.0.1:10025`.
    fn describe(&self) -> String;
}

/// One message as a release's loader leaves it for the sender: the trace header (empty without one) and the
/// original, read and re-hashed, and, for a transport that [wants it](Transport::wants_smtp_data), the two
/// already encoded as SMTP DATA. The buffers are reused from message to message.
#[derive(Default)]
pub(crate) struct Prepared {
    pub(crate) header: Vec<u8>,
    pub(crate) original: Vec<u8>,
    pub(crate) smtp_data: Option<quarantine_mail::encode::Encoded>,
}

/// The transport cannot be used at all (connect, TLS or greeting failed; the command cannot be run), and why.
#[derive(Debug)]
pub struct Down(pub String);
