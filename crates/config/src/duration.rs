//! Go / CircleCI durations (`10m`, `1h30m20s`, `1.5h`, `90s`) and bare numbers of seconds.

/// Parses a duration as CircleCI writes them (Go's `time.ParseDuration` syntax restricted to
/// the units `h`, `m` and `s`) into whole seconds. A bare integer is a number of seconds.
/// Fractions are allowed (`1.5h` is 5400); a sub-second remainder is dropped.
///
/// ```
/// assert_eq!(bosun_config::parse_duration("1h30m20s"), Ok(5420));
/// assert_eq!(bosun_config::parse_duration("20"), Ok(20));
/// assert!(bosun_config::parse_duration("ten minutes").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let invalid = |why: &str| {
        format!("invalid duration `{text}`: {why} (write it like `10m`, `1h30m` or `90s`)")
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(invalid("it is empty"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().map_err(|_| invalid("it is too large"));
    }
    const NANOS: [(&str, u128); 3] = [
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
    ];
    let bytes = s.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let whole = &s[start..i];
        let mut fraction = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let fstart = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            fraction = &s[fstart..i];
        }
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid("expected a number"));
        }
        let ustart = i;
        while i < bytes.len() && !bytes[i].is_ascii_digit() && bytes[i] != b'.' {
            i += 1;
        }
        let unit = &s[ustart..i];
        let Some(&(_, scale)) = NANOS.iter().find(|(u, _)| *u == unit) else {
            return Err(if unit.is_empty() {
                invalid("a number is missing its unit (h, m or s)")
            } else {
                invalid(&format!("unknown unit `{unit}` (use h, m or s)"))
            });
        };
        let too_large = || invalid("it is too large");
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(too_large)?;
        // At most 18 fraction digits: beyond that nothing changes at nanosecond precision,
        // and the arithmetic below stays inside u128.
        let fraction = fraction.get(..fraction.len().min(18)).unwrap_or("");
        if !fraction.is_empty() {
            let digits: u128 = fraction.parse().map_err(|_| too_large())?;
            let denominator = 10u128.pow(fraction.len() as u32);
            value = value
                .checked_add(digits * scale / denominator)
                .ok_or_else(too_large)?;
        }
        total = total.checked_add(value).ok_or_else(too_large)?;
    }
    u64::try_from(total / 1_000_000_000).map_err(|_| invalid("it is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn accepts_go_durations_and_bare_seconds() {
        for (text, secs) in [
            ("10m", 600),
            ("20m", 1200),
            ("1h", 3600),
            ("2h", 7200),
            ("90s", 90),
            ("1h30m20s", 5420),
            ("1m1m", 120),
            ("1.5h", 5400),
            (".5m", 30),
            ("1.5s", 1),
            ("20", 20),
            ("0", 0),
            ("0s", 0),
            (" 10m ", 600),
        ] {
            assert_eq!(parse_duration(text), Ok(secs), "{text}");
        }
    }

    #[test]
    fn rejects_garbage_naming_the_text() {
        for text in [
            "",
            "m",
            "10x",
            "ten minutes",
            "10 m",
            "1.2.3s",
            "-5m",
            "1h-5m",
            "5ms",
            "1d",
            "99999999999999999999999h",
            "20.5",
        ] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(&format!("`{text}`")), "{err}");
        }
        assert_eq!(
            parse_duration("10x").unwrap_err(),
            "invalid duration `10x`: unknown unit `x` (use h, m or s) \
             (write it like `10m`, `1h30m` or `90s`)"
        );
    }
}
