//! Data sizes as Spring's `DataSize` writes them (`256MB`, `64KB`, plain bytes), and back.

const UNITS: [(&str, u32); 5] = [("B", 0), ("KB", 10), ("MB", 20), ("GB", 30), ("TB", 40)];

/// Parses a byte count: digits with an optional unit `B`, `KB`, `MB`, `GB` or `TB` (powers of
/// 1024, as in Spring; any case, blanks allowed between number and unit). `None` if the text is
/// not such a size or the result does not fit in a `u64`.
pub fn parse_data_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return None;
    }
    let number: u64 = digits.parse().ok()?;
    let unit = unit.trim_start();
    let shift = if unit.is_empty() {
        0
    } else {
        UNITS
            .iter()
            .find(|(suffix, _)| suffix.eq_ignore_ascii_case(unit))
            .map(|&(_, shift)| shift)?
    };
    number.checked_mul(1u64 << shift)
}

/// Formats a byte count with the largest binary unit that divides it exactly (`256 MiB`,
/// `1500 B`), so the figure printed is the figure configured.
pub fn format_bytes(bytes: u64) -> String {
    const NAMES: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while unit + 1 < NAMES.len() && value != 0 && value.is_multiple_of(1024) {
        value /= 1024;
        unit += 1;
    }
    format!("{value} {}", NAMES[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes_and_units() {
        assert_eq!(parse_data_size("0"), Some(0));
        assert_eq!(parse_data_size("268435456"), Some(256 << 20));
        assert_eq!(parse_data_size("10B"), Some(10));
        assert_eq!(parse_data_size("64KB"), Some(64 << 10));
        assert_eq!(parse_data_size("256MB"), Some(256 << 20));
        assert_eq!(parse_data_size("1GB"), Some(1 << 30));
        assert_eq!(parse_data_size("2TB"), Some(2 << 40));
    }

    #[test]
    fn case_and_blanks_are_forgiven() {
        assert_eq!(parse_data_size(" 256mb "), Some(256 << 20));
        assert_eq!(parse_data_size("4 Mb"), Some(4 << 20));
    }

    #[test]
    fn rejects_what_is_not_a_size() {
        for text in ["", "MB", "-1", "+5", "1.5GB", "12XB", "1 KiB", "1GBB", "0x10", "ten"] {
            assert_eq!(parse_data_size(text), None, "{text:?}");
        }
    }

    #[test]
    fn rejects_overflow() {
        assert_eq!(parse_data_size("18446744073709551616"), None);
        assert_eq!(parse_data_size("17000000TB"), None);
    }

    #[test]
    fn formats_exact_binary_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1500), "1500 B");
        assert_eq!(format_bytes(64 << 10), "64 KiB");
        assert_eq!(format_bytes(256 << 20), "256 MiB");
        assert_eq!(format_bytes((1 << 30) + (1 << 20)), "1025 MiB");
    }
}
