//! Ids this service makes for what operators create (gates, replays): a letter, 12 hex
//! digits of the creation time in ms and 8 of a random number, so they sort by creation
//! time; accepted back as 1 to 64 ASCII letters, digits, `-` or `_`.

/// Longest accepted id, in bytes.
pub(crate) const MAX_ID_BYTES: usize = 64;

/// Declare an id type: `made_id!(Doc, Name, 'letter', "WireField", "what it is")`.
macro_rules! made_id {
    ($(#[$doc:meta])* $name:ident, $letter:literal, $field:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("A fresh id from the creation time and a random number: `", $letter,
                "` + 12 hex digits of the time in ms + 8 of the number (sorted by creation time).")]
            pub fn new(now: $crate::Timestamp, nonce: u32) -> Self {
                Self(format!(
                    concat!($letter, "{:012x}{:08x}"),
                    now.unix_millis().max(0) as u64 & 0xffff_ffff_ffff,
                    nonce
                ))
            }

            #[doc = concat!("Accept an id as [`as_str`](Self::as_str) shows it; errors name `", $field, "`.")]
            pub fn parse(text: &str) -> Result<Self, $crate::ValidationError> {
                let ok = !text.is_empty()
                    && text.len() <= $crate::made_id::MAX_ID_BYTES
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if ok {
                    Ok(Self(text.to_owned()))
                } else {
                    Err($crate::ValidationError::new(
                        $field,
                        format!(
                            concat!("{:?} is not a ", $what, " (1 to 64 letters, digits, - or _)"),
                            text
                        ),
                    ))
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

pub(crate) use made_id;
