//! Times of day, as `--stat` and `--trace` show them: local time, `10:31:22`, or to the
//! microsecond, `10:31:22.483211`.

use std::time::{SystemTime, UNIX_EPOCH};

/// `time` (seconds since the epoch, as the kernel keeps `msg_stime` and its kin) as the local
/// time of day, `10:31:22`; `-` for 0, "never".
pub fn time_of_day(time: libc::time_t) -> String {
    match local(time) {
        _ if time == 0 => "-".into(),
        Some((h, m, s)) => format!("{h:02}:{m:02}:{s:02}"),
        None => time.to_string(),
    }
}

/// Now, as the local time of day to the microsecond: `10:31:22.483211`.
pub fn now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = libc::time_t::try_from(since.as_secs()).unwrap_or(libc::time_t::MAX);
    match local(seconds) {
        Some((h, m, s)) => format!("{h:02}:{m:02}:{s:02}.{:06}", since.subsec_micros()),
        None => format!("{}.{:06}", since.as_secs(), since.subsec_micros()),
    }
}

/// Hours, minutes and seconds of `time` in local time.
fn local(time: libc::time_t) -> Option<(i32, i32, i32)> {
    // SAFETY: tm holds integers and one pointer (tm_zone), for which null is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r writes only into `tm`.
    let done = unsafe { libc::localtime_r(&time, &mut tm) };
    (!done.is_null()).then_some((tm.tm_hour, tm.tm_min, tm.tm_sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_clock_times() {
        assert_eq!(time_of_day(0), "-");
        let shown = time_of_day(1_700_000_000);
        assert_eq!((shown.len(), shown.as_bytes()[2]), (8, b':'), "{shown}");
        let now = now();
        assert_eq!((now.len(), now.as_bytes()[8]), (15, b'.'), "{now}");
    }
}
