//! `quarantine migrate`: copy an embedded store into a PostgreSQL index (and an object store), then switch it
//! over. The work is `Store::migrate_to`; this parses, prints and maps the outcome to an exit code.

use clap::Args;

use super::{CmdError, CmdResult, Context};
use crate::config::RemoteBlobs;
use crate::exit::Status;
use crate::output::{escape, TermProgress};

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The destination index: a PostgreSQL URL (postgresql://USER@HOST/DB) or conninfo (host=... dbname=...).
    #[arg(long, value_name = "URL")]
    pub to_index: String,
    /// The destination blob store: s3://BUCKET/PREFIX (endpoint, region and keys from the config's [s3] table
    /// or AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). Without it the blobs stay
    /// in STORE/blobs/.
    #[arg(long, value_name = "URL")]
    pub to_blobs: Option<String>,
    /// At the end, read every object back and check it against its BLAKE3 name (not only its size).
    #[arg(long)]
    pub deep: bool,
    /// One JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context, a: MigrateArgs) -> CmdResult {
    if ctx.config.blobs.is_some() || ctx.config.index != quarantine_store::IndexLocation::Sqlite {
        return Err(CmdError::Usage(
            "migrate copies an embedded store: run it with the old config (no `index` or `blobs`), then set \
             `index`/`blobs` to the destination"
                .into(),
        ));
    }
    let to = a.to_index.trim();
    if !(to.starts_with("postgresql://") || to.starts_with("postgres://") || to.contains('=')) {
        return Err(CmdError::Usage(format!(
            "--to-index {to:?}: not a PostgreSQL URL (postgresql://USER@HOST/DB) or conninfo (host=... dbname=...)"
        )));
    }
    let mut backends = quarantine_store::Backends {
        index: quarantine_store::IndexLocation::Postgres(to.to_string()),
        ..Default::default()
    };
    if let Some(url) = &a.to_blobs {
        quarantine_objects::S3Url::parse(url).map_err(|e| CmdError::Usage(format!("--to-blobs: {e}")))?;
        let remote = RemoteBlobs { url: url.clone(), settings: ctx.config.s3.clone() };
        let client = remote.connect().map_err(|e| CmdError::Usage(format!("--to-blobs: {e}")))?;
        backends.blobs = quarantine_store::BlobLocation::Remote(client);
    }
    // No ingest first: what the spool holds goes to the destination with the first ingest there.
    let mut store = ctx.open_without_ingest()?;
    let report = store.migrate_to(&backends, a.deep, &TermProgress::new())?;
    if a.json {
        out!("{}", serde_json::to_string(&report).map_err(std::io::Error::from)?);
    } else {
        for (t, n) in &report.tables {
            out!("{t:<13} {n} row(s)");
        }
        out!(
            "objects: {} uploaded, {} already there, {} checked{}",
            report.uploaded,
            report.already_there,
            report.objects_checked,
            if report.deep { " (read back and hashed)" } else { " (size)" }
        );
        if let Some(h) = &report.audit_head {
            out!("audit head: seq {} hash {}", h.seq, h.hash);
        }
        match &report.mismatch {
            Some(m) => out!("MISMATCH: {}; the store was not switched over (run migrate again)", escape(m)),
            None => {
                out!("migrated to index {} and blobs {}", escape(&report.index), escape(&report.blobs));
                out!(
                    "next: set `index = \"{}\"`{} in the config, then run `quarantine ingest` ({} spool file(s) \
                     waiting)",
                    escape(&report.index),
                    a.to_blobs.as_ref().map(|b| format!(" and `blobs = \"{}\"`", escape(b))).unwrap_or_default(),
                    report.spool_pending
                );
            }
        }
    }
    Ok(if report.ok() { Status::Success } else { Status::Failure })
}
