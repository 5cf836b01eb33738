//! Error signatures: one stable id for "the same failure" seen many times.
//!
//! Two failures have the same [`ErrorSignature`] when they have the same category, the same
//! error code, and messages that differ only in the parts that vary from one occurrence to
//! the next: numbers, ids, paths, URLs, e-mail addresses, quoted values and durations. The
//! failure groups (`failed-groups`) are keyed by it, and the listing's `signature=` filter
//! takes it.
//!
//! # Normalisation
//! [`normalise_message`] rewrites a message, left to right, replacing
//!
//! | what | example | becomes |
//! |---|---|---|
//! | quoted text: `'…'`, `"…"`, `` `…` ``, `“…”`, `‘…’`, `「…」`, `『…』`, `《…》`, `«…»` (at most 256 characters inside) | `table "users_2024"` | `table <str>` |
//! | URLs (`scheme://…`) | `https://api.example.com/v1/embed` | `<url>` |
//! | e-mail addresses | `ops@example.com` | `<email>` |
//! | paths: starting `/`, `~/`, `./`, `../`, `C:\`, `C:/` or `\\`, or with two `/` or one `\` | `/projects/myapp/src/main.rs` | `<path>` |
//! | UUIDs | `3fa85f64-5717-4562-b3fc-2c963f66afa6` | `<id>` |
//! | hex ids: a word of 6 or more hex digits with a digit and a letter, or `0x…` | `a3f9c2e1`, `0x1F` | `<id>` |
//! | durations written with a unit (Go or humantime style) | `30s`, `1.5ms`, `2m30s` | `<dur>` |
//! | any other run of ASCII digits, with decimals | `30`, `10.0.0.1`, `task_001` | `<n>`, `<n>`, `task_<n>` |
//!
//! then collapses every run of whitespace to one space, trims both ends, and keeps at most
//! [`MAX_NORMALISED_BYTES`] bytes (cut at a character boundary and marked with `…`).
//! Everything else, Chinese text included, is kept as it is:
//! `向量嵌入服务超时，请求超过30秒未响应` becomes `向量嵌入服务超时，请求超过<n>秒未响应`.
//! Normalising twice gives the same text as normalising once.
//!
//! # The id
//! The signature is the 64-bit FNV-1a hash of `category`, the error code and the normalised
//! message (separated by U+001F), written as 16 lowercase hex digits. FNV-1a is implemented
//! here rather than taken from `std`, whose hasher is randomly keyed per process: the id
//! must be the same in every process, on every platform, and after a restart, because
//! stores keep counters under it. Changing the normalisation rules changes ids, so it is a
//! breaking change for stored groups.

use std::fmt;
use std::str::FromStr;

use crate::{ErrorCategory, FailedTask, ValidationError};

/// The longest normalised message kept, in bytes; the rest does not count towards the
/// signature. Long enough for the distinguishing part of any real message.
pub const MAX_NORMALISED_BYTES: usize = 512;
/// Only this many bytes of a raw message are read (messages are at most 8 KiB anyway):
/// bounds the work for arbitrary input.
const MAX_INPUT_BYTES: usize = 4 * 1024;
/// The most characters a quoted value may hold and still be replaced as one.
const MAX_QUOTED_CHARS: usize = 256;
/// Marks a normalised message that was cut.
const ELLIPSIS: char = '…';
/// How many passes normalisation may take to reach its fixed point (it usually takes one).
const MAX_PASSES: usize = 4;

/// The stable id of a kind of failure: 16 lowercase hex digits.
///
/// Build it from a failure with [`ErrorSignature::of`] or [`ErrorSignature::of_task`], or
/// from a client's `signature=` parameter with [`ErrorSignature::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorSignature(String);

impl ErrorSignature {
    /// The number of hex digits in a signature.
    pub const LEN: usize = 16;

    /// The signature of a failure of `category` with `error_code` and `message`.
    pub fn of(category: ErrorCategory, error_code: &str, message: &str) -> Self {
        ErrorPattern::of(category, error_code, message).signature
    }

    /// The signature of a recorded task.
    pub fn of_task(task: &FailedTask) -> Self {
        Self::of(
            task.error_category(),
            task.error_code().as_str(),
            task.error_message().as_str(),
        )
    }

    /// Accept exactly what [`as_str`](Self::as_str) produces: 16 lowercase hex digits.
    /// Anything else is a [`ValidationError`] on `signature`.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let ok = text.len() == Self::LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(ValidationError::new(
                "signature",
                format!("{text:?} is not an error signature (16 lowercase hex digits)"),
            ))
        }
    }

    /// The 16 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ErrorSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ErrorSignature {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for ErrorSignature {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What a failure's signature is made of: its category, error code and normalised message,
/// together with the signature itself. A failure group shows these as its description.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorPattern {
    category: ErrorCategory,
    error_code: String,
    normalised_message: String,
    signature: ErrorSignature,
}

impl ErrorPattern {
    /// Normalise `message` and compute the signature.
    pub fn of(category: ErrorCategory, error_code: &str, message: &str) -> Self {
        let normalised_message = normalise_message(message);
        let mut hash = Fnv1a::new();
        hash.write(category.as_str().as_bytes());
        hash.write(&[0x1f]);
        hash.write(error_code.as_bytes());
        hash.write(&[0x1f]);
        hash.write(normalised_message.as_bytes());
        Self {
            category,
            error_code: error_code.to_owned(),
            normalised_message,
            signature: ErrorSignature(format!("{:016x}", hash.finish())),
        }
    }

    /// The pattern of a recorded task.
    pub fn of_task(task: &FailedTask) -> Self {
        Self::of(
            task.error_category(),
            task.error_code().as_str(),
            task.error_message().as_str(),
        )
    }

    /// The failure's category.
    pub fn category(&self) -> ErrorCategory {
        self.category
    }
    /// The failure's error code, as given.
    pub fn error_code(&self) -> &str {
        &self.error_code
    }
    /// The message with its varying parts replaced by placeholders.
    pub fn normalised_message(&self) -> &str {
        &self.normalised_message
    }
    /// The signature of all this.
    pub fn signature(&self) -> &ErrorSignature {
        &self.signature
    }
    /// The signature, by value.
    pub fn into_signature(self) -> ErrorSignature {
        self.signature
    }
}

/// 64-bit FNV-1a: tiny, fixed, and the same everywhere.
struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Self(Self::OFFSET)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `message` with numbers, ids, paths, URLs, e-mail addresses, quoted values and durations
/// replaced by placeholders, whitespace collapsed, and cut to [`MAX_NORMALISED_BYTES`].
/// See the module docs for the rules. Idempotent; never panics.
pub fn normalise_message(message: &str) -> String {
    let mut text = normalise_once(cut(message, MAX_INPUT_BYTES));
    // The rules are written to be stable, but a replacement can change what its
    // neighbours look like (a quoted value that was too long to match may fit once its
    // numbers are shorter); repeating until nothing changes makes idempotence certain.
    for _ in 1..MAX_PASSES {
        let next = normalise_once(&text);
        if next == text {
            break;
        }
        text = next;
    }
    if text.len() > MAX_NORMALISED_BYTES {
        let kept = cut(&text, MAX_NORMALISED_BYTES - ELLIPSIS.len_utf8()).len();
        text.truncate(kept);
        text.push(ELLIPSIS);
    }
    text
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Characters that make a neighbouring ASCII quote part of a word (`can't`) rather than a
/// delimiter. Placeholder brackets and the cut mark count, so that replacing text next to a
/// quote never turns it into a delimiter on a second pass.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '<' | '>' | ELLIPSIS)
}

/// East Asian scripts and full-width punctuation: they end a path or URL, because Chinese
/// text often runs straight on after one (`无法打开/projects/myapp，权限不足`).
fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{2E80}'..='\u{9FFF}'
        | '\u{AC00}'..='\u{D7AF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{FE30}'..='\u{FE4F}'
        | '\u{FF00}'..='\u{FFEF}'
        | '\u{20000}'..='\u{3FFFF}')
}

/// The closing quote for an opening one, if `c` opens a quote.
fn closing_quote(c: char) -> Option<char> {
    Some(match c {
        '\'' | '"' | '`' => c,
        '“' => '”',
        '‘' => '’',
        '「' => '」',
        '『' => '』',
        '《' => '》',
        '«' => '»',
        '＂' => '＂',
        '＇' => '＇',
        _ => return None,
    })
}

fn is_quote(c: char) -> bool {
    closing_quote(c).is_some() || matches!(c, '”' | '’' | '」' | '』' | '》' | '»')
}

/// Characters a path, URL or e-mail address may contain.
fn is_path_char(c: char) -> bool {
    !(c.is_whitespace()
        || c.is_control()
        || is_quote(c)
        || is_cjk(c)
        || matches!(c, ',' | ';' | '<' | '>' | '|' | ELLIPSIS))
}

/// Trailing punctuation that belongs to the sentence rather than to a path or URL.
fn is_trailing_punct(c: char) -> bool {
    matches!(c, '.' | ',' | ':' | ';' | '!' | '?' | ')' | ']' | '}')
}

/// Duration units, longest first so `ms` wins over `m`.
const UNITS: &[&str] = &[
    "seconds", "minutes", "second", "minute", "hours", "mins", "secs", "days", "hour", "min",
    "sec", "day", "ns", "us", "µs", "μs", "ms", "s", "m", "h", "d",
];

fn starts_with_at(chars: &[char], at: usize, s: &str) -> bool {
    (at..).zip(s.chars()).all(|(i, c)| chars.get(i) == Some(&c))
}

fn digits_end(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(char::is_ascii_digit) {
        i += 1;
    }
    i
}

/// `digits` then any number of `.digits`, from `i` (which must be a digit).
fn number_end(chars: &[char], i: usize) -> usize {
    let mut end = digits_end(chars, i);
    while chars.get(end) == Some(&'.') && chars.get(end + 1).is_some_and(char::is_ascii_digit) {
        end = digits_end(chars, end + 1);
    }
    end
}

/// A duration such as `30s`, `1.5ms` or `2m30s` starting at `i`, ending where no ASCII
/// letter or digit follows; its end.
fn duration_end(chars: &[char], i: usize) -> Option<usize> {
    let mut pos = i;
    loop {
        if !chars.get(pos).is_some_and(char::is_ascii_digit) {
            return None;
        }
        let mut end = digits_end(chars, pos);
        if chars.get(end) == Some(&'.') && chars.get(end + 1).is_some_and(char::is_ascii_digit) {
            end = digits_end(chars, end + 1);
        }
        let unit = UNITS.iter().find(|u| starts_with_at(chars, end, u))?;
        pos = end + unit.chars().count();
        match chars.get(pos) {
            Some(c) if c.is_ascii_digit() => continue,
            Some(c) if c.is_ascii_alphanumeric() => return None,
            _ => return Some(pos),
        }
    }
}

fn is_hex_run(chars: &[char], from: usize, len: usize) -> bool {
    (from..from + len).all(|j| chars.get(j).is_some_and(char::is_ascii_hexdigit))
}

/// A UUID (8-4-4-4-12 hex digits, at least one of them a decimal digit) starting at `i`;
/// its end.
fn uuid_end(chars: &[char], i: usize) -> Option<usize> {
    let mut pos = i;
    for (n, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if n > 0 {
            if chars.get(pos) != Some(&'-') {
                return None;
            }
            pos += 1;
        }
        if !is_hex_run(chars, pos, len) {
            return None;
        }
        pos += len;
    }
    let has_digit = chars[i..pos].iter().any(char::is_ascii_digit);
    let ends = !chars.get(pos).is_some_and(char::is_ascii_alphanumeric);
    (has_digit && ends).then_some(pos)
}

fn is_scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')
}

/// What starts at `i`, the start of a run of path characters, if it is a URL, an e-mail
/// address or a path: the placeholder and where it ends (trailing sentence punctuation
/// excluded). Every scan here stops at the next possible start, so a pass stays linear.
fn token_at(chars: &[char], i: usize) -> Option<(&'static str, usize)> {
    let strip = |mut end: usize| {
        while end > i && is_trailing_punct(chars[end - 1]) {
            end -= 1;
        }
        end
    };

    // scheme://... runs to the end of the path characters, `=` and all.
    let mut scheme_end = i;
    while chars.get(scheme_end).is_some_and(|&c| is_scheme_char(c)) {
        scheme_end += 1;
    }
    if scheme_end > i && chars[i].is_ascii_alphabetic() && starts_with_at(chars, scheme_end, "://")
    {
        let mut end = scheme_end;
        while chars.get(end).is_some_and(|&c| is_path_char(c)) {
            end += 1;
        }
        return Some(("<url>", strip(end)));
    }

    // Anything else ends at `=`, so `--path=/var/lib` keeps its flag name.
    let mut end = i;
    while chars.get(end).is_some_and(|&c| is_path_char(c) && c != '=') {
        end += 1;
    }
    let end = strip(end);
    let run = &chars[i..end];
    if run.is_empty() {
        return None;
    }
    let text: String = run.iter().collect();
    let slashes = text.matches('/').count();
    // local@domain.tld, not part of a path
    if slashes == 0 {
        if let Some((local, domain)) = text.split_once('@') {
            let domain_ok = domain
                .split_once('.')
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty());
            if !local.is_empty() && domain_ok && !domain.contains('@') {
                return Some(("<email>", end));
            }
        }
    }
    let drive = run.len() > 3
        && run[0].is_ascii_alphabetic()
        && run[1] == ':'
        && matches!(run[2], '\\' | '/');
    let prefixed = ["/", "~/", "./", "../", ".\\", "..\\", "\\\\"]
        .iter()
        .any(|p| text.len() > p.len() && text.starts_with(p));
    let is_path = drive || prefixed || slashes >= 2 || text.contains('\\');
    // Separators and dots alone ("//", "/.") are not a path.
    if is_path && text.chars().any(|c| c != '/' && c != '\\' && c != '.') {
        return Some(("<path>", end));
    }
    None
}

/// One left-to-right pass of the rules in the module docs.
fn normalise_once(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev = out.chars().next_back();

        if c.is_whitespace() {
            if prev.is_some_and(|p| p != ' ') {
                out.push(' ');
            }
            i += 1;
            continue;
        }

        // Quoted values. ASCII ' and ` only open after a non-word character and only close
        // before one, so apostrophes (can't, O'Brien) are left alone.
        if let Some(close) = closing_quote(c) {
            let ascii_apostrophe = c == '\'' || c == '`';
            let may_open = !ascii_apostrophe || !prev.is_some_and(is_word_char);
            if may_open {
                let limit = (i + 2 + MAX_QUOTED_CHARS).min(chars.len());
                let closer = (i + 1..limit).find(|&j| {
                    chars[j] == close
                        && (!ascii_apostrophe
                            || !chars.get(j + 1).is_some_and(|&n| is_word_char(n)))
                });
                if let Some(j) = closer {
                    out.push_str("<str>");
                    i = j + 1;
                    continue;
                }
            }
            out.push(c);
            i += 1;
            continue;
        }

        // A UUID may follow anything but a letter or digit (`req_<uuid>`, `id:<uuid>`).
        if !prev.is_some_and(|p| p.is_ascii_alphanumeric()) {
            if let Some(end) = uuid_end(&chars, i) {
                out.push_str("<id>");
                i = end;
                continue;
            }
        }
        // URLs, addresses and paths are looked for only where a run of path characters
        // starts (or after `=`), never again inside one: that keeps a pass linear.
        let run_start = prev.is_none_or(|p| !is_path_char(p) || p == '=');
        if run_start {
            if let Some((placeholder, end)) = token_at(&chars, i) {
                out.push_str(placeholder);
                i = end;
                continue;
            }
        }

        if c.is_ascii_alphanumeric() {
            let word_start_ok = !prev.is_some_and(|p| p.is_ascii_alphanumeric());
            if c.is_ascii_digit() && word_start_ok {
                if let Some(end) = duration_end(&chars, i) {
                    out.push_str("<dur>");
                    i = end;
                    continue;
                }
            }
            let mut end = i;
            while chars.get(end).is_some_and(char::is_ascii_alphanumeric) {
                end += 1;
            }
            let word = &chars[i..end];
            let hex_prefixed = word.len() > 2
                && word[0] == '0'
                && matches!(word[1], 'x' | 'X')
                && word[2..].iter().all(char::is_ascii_hexdigit);
            let hex_id = word.len() >= 6
                && word.iter().all(char::is_ascii_hexdigit)
                && word.iter().any(char::is_ascii_digit)
                && word.iter().any(char::is_ascii_alphabetic);
            if word_start_ok && (hex_prefixed || hex_id) {
                out.push_str("<id>");
                i = end;
                continue;
            }
            // Letters kept, every run of digits (with its decimals) one <n>.
            let mut j = i;
            while j < end {
                if chars[j].is_ascii_digit() {
                    let num_end = number_end(&chars, j);
                    out.push_str("<n>");
                    j = num_end;
                    // A decimal may run past this word ("1.5"): continue after it.
                    end = end.max(j);
                    while chars.get(end).is_some_and(char::is_ascii_alphanumeric) {
                        end += 1;
                    }
                } else {
                    out.push(chars[j]);
                    j += 1;
                }
            }
            i = end;
            continue;
        }

        out.push(c);
        i += 1;
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}
