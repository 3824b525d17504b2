//! Header extraction (`headers::extract`) on arbitrary bytes, whole and as a truncated prefix: never panics (a
//! panic here is caught in production, but costs the message its index fields), and every field stays within the
//! index's size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quarantine_mail::headers;

fuzz_target!(|data: &[u8]| {
    let check = |f: &headers::HeaderFields| {
        for v in [&f.from, &f.to, &f.cc, &f.subject, &f.message_id, &f.date].into_iter().flatten() {
            assert!(v.len() <= 4096, "an index field of {} bytes", v.len());
        }
        for a in &f.attachments {
            assert!(a.len() <= 4096, "an attachment name of {} bytes", a.len());
        }
    };
    check(&headers::extract(data, data.len() as u64));
    // As the prefix of a message too big to parse whole.
    check(&headers::extract(data, data.len() as u64 + 1 + (headers::FULL_PARSE_LIMIT as u64)));
});
