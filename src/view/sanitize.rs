//! Making pipeline text safe to print, and fitting it into columns.
//!
//! Everything a pipeline prints (messages, errors, stage names, plain output)
//! goes through [`sanitize`] before it reaches the user's terminal, so that no
//! text can move the cursor, clear the screen, change the title or set
//! colours. Escape sequences (CSI, OSC, DCS and the two-byte ones) are
//! removed whole; any other control character is shown in caret notation,
//! as `cat -v` does (`^M` for a carriage return, `^[` for a lone escape,
//! `^?` for DEL: plain ASCII, which every terminal font has); C1 controls, bidirectional overrides and line separators are
//! written out as `<U+202E>`; a tab becomes a space. What is left has one display cell per column as
//! [`unicode_width`] counts them, so [`fit`] can cut a line to a width.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// How many bytes of one line are shown at most; the rest is counted.
pub const MAX_SHOWN_BYTES: usize = 16 * 1024;

/// `text` with every escape sequence removed and every other control
/// character made visible; at most [`MAX_SHOWN_BYTES`] of it, with a note
/// of how much was left out.
pub fn sanitize(text: &str) -> String {
    // Most text is printable ASCII or plain Unicode: nothing to do.
    if text.len() <= MAX_SHOWN_BYTES && !text.chars().any(needs_care) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len().min(MAX_SHOWN_BYTES) + 16);
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if out.len() >= MAX_SHOWN_BYTES {
            out.push_str(&format!(" [… {} more bytes]", text.len() - at));
            break;
        }
        match c {
            '\u{1b}' => match chars.peek().map(|&(_, c)| c) {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    chars.next();
                    for (_, c) in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    chars.next();
                    while let Some((_, c)) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            if chars.peek().map(|&(_, c)| c) == Some('\\') {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                // Two-byte sequences such as ESC 7, ESC c (reset), ESC M.
                Some(c) if ('\u{20}'..='\u{7e}').contains(&c) => {
                    chars.next();
                    // `ESC ( B` and friends take one more byte.
                    if ('\u{20}'..='\u{2f}').contains(&c) {
                        chars.next();
                    }
                }
                _ => out.push_str("^["),
            },
            '\t' => out.push(' '),
            '\u{0}'..='\u{1f}' => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\u{7f}' => out.push_str("^?"),
            // C1 controls (U+009B is a one-character CSI on some terminals),
            // bidirectional overrides and isolates, and the line/paragraph
            // separators that some terminals treat as newlines.
            '\u{80}'..='\u{9f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{2028}'
            | '\u{2029}' => out.push_str(&format!("<U+{:04X}>", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn needs_care(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}'
        | '\u{2028}'
        | '\u{2029}')
}

/// Display width of already sanitised text.
pub fn width(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

/// `text` cut to at most `cols` display columns, ending in `…` when cut.
pub fn fit(text: &str, cols: usize) -> String {
    if width(text) <= cols {
        return text.to_owned();
    }
    if cols == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > cols - 1 {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// `text` padded with spaces to `cols` display columns (or cut to them).
pub fn pad(text: &str, cols: usize) -> String {
    let text = fit(text, cols);
    let w = width(&text);
    let mut out = text;
    out.extend(std::iter::repeat_n(' ', cols.saturating_sub(w)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_removed_whole() {
        assert_eq!(sanitize("\u{1b}[31mred\u{1b}[0m"), "red");
        assert_eq!(sanitize("a\u{1b}[2J\u{1b}[Hb"), "ab");
        assert_eq!(sanitize("\u{1b}]0;title\u{7}x"), "x");
        assert_eq!(
            sanitize("\u{1b}]8;;http://e\u{1b}\\link\u{1b}]8;;\u{1b}\\"),
            "link"
        );
        assert_eq!(sanitize("\u{1b}Pdcs\u{1b}\\y"), "y");
        assert_eq!(sanitize("\u{1b}cz\u{1b}7\u{1b}8"), "z");
        assert_eq!(sanitize("\u{1b}(Bq"), "q");
        assert_eq!(sanitize("\u{1b}[?1049h\u{1b}[10;10r"), "");
    }

    #[test]
    fn other_controls_become_visible() {
        assert_eq!(sanitize("a\rb"), "a^Mb");
        assert_eq!(sanitize("a\nb"), "a^Jb");
        assert_eq!(sanitize("bell\u{7}"), "bell^G");
        assert_eq!(sanitize("back\u{8}"), "back^H");
        assert_eq!(sanitize("del\u{7f}"), "del^?");
        assert_eq!(sanitize("tab\there"), "tab here");
        assert_eq!(sanitize("lone\u{1b}"), "lone^[");
        assert_eq!(sanitize("c1\u{9b}31m"), "c1<U+009B>31m");
        assert_eq!(sanitize("bidi\u{202e}x\u{2066}"), "bidi<U+202E>x<U+2066>");
        assert_eq!(sanitize("bad \u{fffd} utf-8"), "bad \u{fffd} utf-8");
        assert_eq!(sanitize("héllo 世界 ✓"), "héllo 世界 ✓");
    }

    #[test]
    fn nothing_left_can_move_the_cursor() {
        let hostile: String = (0u32..0x300)
            .filter_map(char::from_u32)
            .chain("\u{1b}[".chars())
            .collect();
        let clean = sanitize(&hostile);
        assert!(!clean
            .chars()
            .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)));
    }

    #[test]
    fn huge_text_is_cut_with_a_count() {
        let big = "x".repeat(MAX_SHOWN_BYTES + 100);
        let clean = sanitize(&big);
        assert!(
            clean.ends_with(" [… 100 more bytes]"),
            "{}",
            &clean[clean.len() - 30..]
        );
        assert_eq!(clean.len(), MAX_SHOWN_BYTES + " [… 100 more bytes]".len());
    }

    #[test]
    fn fit_counts_display_columns() {
        assert_eq!(fit("abcdef", 6), "abcdef");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("世界世界", 5), "世界…");
        assert_eq!(fit("abc", 0), "");
        assert_eq!(pad("ab", 4), "ab  ");
        assert_eq!(pad("abcdef", 4), "abc…");
        assert_eq!(width("世界"), 4);
    }
}
