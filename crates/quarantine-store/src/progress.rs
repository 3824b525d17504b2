//! Long operations report progress through this trait; the CLI implements it with indicatif on a terminal and
//! with nothing in cron, so the library never touches a terminal.

pub trait Progress {
    fn start(&self, _what: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

/// Progress that goes nowhere.
pub struct Silent;
impl Progress for Silent {}
