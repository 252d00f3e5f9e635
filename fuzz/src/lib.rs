//! What every fuzz target demands of a refusal, whichever parser made it.

use keyhold_core::InvalidInput;

/// Longest message a refusal may carry: parsers quote at most 80 characters of
/// the input, so anything longer means raw input leaked into the message.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// A refusal names the field it was given, says something, and can be shown
/// to a user as one line without smuggling control characters or a flood of
/// input into a response or a log.
pub fn assert_refusal(err: &InvalidInput, field: &str, input: &str) {
    assert_eq!(err.field, field, "wrong field for {input:?}: {err:?}");
    assert!(
        !err.message.trim().is_empty(),
        "empty message refusing {input:?}"
    );
    assert!(
        !err.message.chars().any(char::is_control),
        "control character in the message refusing {input:?}: {:?}",
        err.message
    );
    assert!(
        err.message.chars().count() <= MAX_MESSAGE_CHARS,
        "a {}-character message refusing {input:?}",
        err.message.chars().count()
    );
}
