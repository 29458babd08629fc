//! Text that comes from outside (an API's error message, a header, a name in a file or in Redis),
//! held to a length where it enters, so that no value can bloat a frame, the state file, the log
//! or `/metrics`.

/// The longest message kept from an error body (a 429's, a lockout's reason).
pub const MAX_MESSAGE: usize = 1024;

/// `text` cut to at most `max` bytes at a character boundary, with `…` when cut.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(bounded("short", 10), "short");
        let cut = bounded(&"é".repeat(100), 11);
        assert!(cut.len() <= 11, "{cut}");
        assert!(cut.ends_with('…'));
        assert_eq!(bounded(&"x".repeat(5000), MAX_MESSAGE).len(), MAX_MESSAGE);
    }
}
