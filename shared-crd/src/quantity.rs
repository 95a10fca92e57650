//! Kubernetes quantities (`2`, `1500m`, `8Gi`, `1e3`) as plain numbers, for the
//! capacity arithmetic both operators do.

/// Parses a quantity into a number: `500m` is 0.5, `1Gi` is 2^30. `None` if it is not one.
pub fn parse(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some(value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1500m"), Some(1.5));
        assert_eq!(parse("8Gi"), Some(8.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1k"), Some(1000.0));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("two"), None);
        assert_eq!(parse("5Qi"), None);
        assert_eq!(parse(""), None);
    }
}
