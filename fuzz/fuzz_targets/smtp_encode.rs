//! The SMTP data encoder of release (`release::encode`): whatever the stored bytes, the DATA payload has only CRLF
//! line endings, contains `CRLF . CRLF` only as its terminator (no early end of data, no smuggled second
//! message), and round-trips through a receiver's un-stuffing to the normalised original. Built from pieces (the
//! trace header, then the original), `DataWriter` gives exactly `smtp_data` of the concatenation, wherever the
//! pieces are cut (a CRLF split across two pieces included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quarantine_mail::encode;

fn bare_cr_or_lf(b: &[u8]) -> Option<usize> {
    (0..b.len())
        .find(|&i| (b[i] == b'\r' && b.get(i + 1) != Some(&b'\n')) || (b[i] == b'\n' && (i == 0 || b[i - 1] != b'\r')))
}

/// What a receiver makes of the wire: data up to the first `CRLF . CRLF` (or a leading `. CRLF`), one leading
/// dot removed from each line. Returns the data and how many bytes of the wire it used.
fn receive(wire: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    for line in wire.split_inclusive(|&b| b == b'\n') {
        pos += line.len();
        if line == b".\r\n" {
            return (out, pos);
        }
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    (out, usize::MAX)
}

fuzz_target!(|input: &[u8]| {
    // The first two bytes cut the rest into three pieces.
    let (cuts, data) = input.split_at(input.len().min(2));
    let wire = encode::smtp_data(data);
    assert!(wire.ends_with(b".\r\n"), "no terminator");
    assert_eq!(bare_cr_or_lf(&wire), None, "bare CR or LF on the wire");
    let (got, used) = receive(&wire);
    assert_eq!(used, wire.len(), "the receiver's data ended at byte {used} of {}", wire.len());
    let mut want = encode::normalize(data, b"\r\n");
    if !want.ends_with(b"\r\n") {
        want.extend_from_slice(b"\r\n");
    }
    assert!(got == want, "round trip: {got:?} != {want:?}");

    let a = cuts.first().map_or(0, |&c| c as usize % (data.len() + 1));
    let b = cuts.get(1).map_or(data.len(), |&c| a + c as usize % (data.len() - a + 1));
    let mut w = encode::DataWriter::with_capacity(data.len());
    for piece in [&data[..a], &data[a..b], &data[b..]] {
        w.push(piece);
    }
    assert!(w.finish() == wire, "pieces cut at {a} and {b} encode differently from the whole");

    // The sendmail path: LF only, nothing else changed.
    let lf = encode::normalize(data, b"\n");
    assert!(!lf.contains(&b'\r'), "a CR survived LF normalisation");
    assert_eq!(encode::normalize(&lf, b"\r\n"), encode::normalize(data, b"\r\n"));
});
