//! Sizes as manifests write them: `4096` (bytes), `512KiB`, `256MiB`,
//! `2GiB` (also `K`/`M`/`G`, `KB`/`MB`/`GB`, all powers of 1024).

/// Bytes of `512MiB`, `2GiB`, `4096`; `None` when malformed or too large.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let shift = match unit.trim_start() {
        "" | "B" => 0,
        "K" | "KB" | "KiB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        "T" | "TB" | "TiB" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_refusals() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size(" 256 MiB "), Some(256 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1TB"), Some(1 << 40));
        for bad in ["", "MiB", "1.5GiB", "-1", "2 gigabytes", "99999999999TiB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
